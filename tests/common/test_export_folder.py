"""``common.export_folder``: the ``out=`` checks both export commands make, and the reference
tensors and record they write (the commands' end-to-end tests cover the folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.export_folder import check_out, write_record, write_reference


class Refused(Exception):
    pass


def test_check_out_refuses_a_missing_the_source_or_an_existing_folder(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    cases = {
        "choose the export folder with out=DIR": dict(out=None, overwrite=True),
        "out=run/ is the graft folder itself; choose another folder": dict(
            out="run/", overwrite=True, source=tmp_path / "run"
        ),
        "out=run already exists; choose another folder or add overwrite=true": dict(
            out="run", overwrite=False
        ),
    }
    for message, kwargs in cases.items():
        with pytest.raises(Refused) as e:
            check_out(**kwargs, source_name="graft folder", error=Refused)
        assert str(e.value) == message
    assert check_out("run", overwrite=True, source=None) == Path("run")
    assert check_out("new", overwrite=False, source="run") == Path("new")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_out("~/new", overwrite=False) == tmp_path / "new"
    with pytest.raises(ValueError, match="already exists"):  # the default error type
        check_out("~/run", overwrite=False)


def test_reference_and_record(tmp_path) -> None:
    inputs = {"x": torch.arange(6.0).reshape(2, 3), "t": torch.tensor([1, 2])}
    write_reference(tmp_path, lambda x, t: (x * t[:, None]).t(), inputs)  # not contiguous
    saved = load_file(str(tmp_path / "reference.safetensors"))
    assert saved.keys() == {"x", "t", "outputs"}
    assert torch.equal(saved["outputs"], torch.tensor([[0.0, 6.0], [1.0, 8.0], [2.0, 10.0]]))
    assert torch.equal(saved["x"], inputs["x"]) and torch.equal(saved["t"], inputs["t"])

    info = write_record(tmp_path, {"n": 1, "path": tmp_path}, lambda i: f"# card {i['n']}\n")
    assert info["files"] == ["reference.safetensors", "export.json", "README.md"]
    assert json.loads((tmp_path / "export.json").read_text()) == {**info, "path": str(tmp_path)}
    assert (tmp_path / "export.json").read_text().endswith("}\n")
    assert (tmp_path / "README.md").read_text() == "# card 1\n"
