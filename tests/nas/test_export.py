"""``python -m nas.export`` end to end on a tiny search run, trial selection, errors that leave
nothing behind, reloading in a fresh process, and the ONNX pooling translation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nas.export import choose_trials, main
from nas.portable import write_portable
from search_spaces import Arch, build_model, load_exported
from tests.nas.search_run import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("search"))


FAST = ["latency.min_run_time=0.01", "latency.min_runs=1", "progress=false"]

RELOAD = """
import sys, torch
from safetensors.torch import load_file
d = sys.argv[1]
ref = load_file(d + "/reference.safetensors")
program = torch.export.load(d + "/model.pt2").module()
assert not [m for m in sys.modules if m.split(".")[0] in ("search_spaces", "supernet", "nas")]
torch.testing.assert_close(program(ref["inputs"]), ref["outputs"], rtol=0, atol=1e-5)
from search_spaces import load_exported
model = load_exported(d)
with torch.no_grad():
    torch.testing.assert_close(model(ref["inputs"]), ref["outputs"], rtol=0, atol=0)
assert not [m for m in sys.modules if m.split(".")[0] in ("supernet", "nas", "lightning", "optuna")]
print("ok")
"""


def test_export_pareto_front_end_to_end(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "export"
    assert main([f"run={run_dir}", "finetune_steps=2", f"out={out}", *FAST]) == 0
    # one folder per row of pareto.csv: trial 4, on the study's raw front, repeats trial 1's arch
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "summary.csv",
        "trial_0",
        "trial_1",
    ]
    rows = {r["trial"]: r for r in csv.DictReader((run_dir / "pareto.csv").open())}
    for n in (0, 1):
        d = out / f"trial_{n}"
        for name in (
            "arch.yaml",
            "model.safetensors",
            "model.onnx",
            "model.pt2",
            "README.md",
            "export.json",
            "reference.safetensors",
        ):
            assert (d / name).is_file(), name
        info = json.loads((d / "export.json").read_text())
        assert info["portable"]["onnx_max_abs_diff"] <= 1e-4 and info["training"]["steps"] == 2
        assert info["portable"]["dynamic_axes"] == {"0": "batch", "1": "length"}
        card = (d / "README.md").read_text()
        row_line = "| " + " | ".join(rows[str(n)].values()) + " |"
        assert row_line in card  # search-time numbers verbatim from pareto.csv
        assert "fine-tuned 2 steps" in card and info["latency"]["fingerprint_key"] in card
        assert card.startswith("---\n")  # Hub metadata: tags, the task, its metric on val and test
        meta = yaml.safe_load(card.split("---\n", 2)[1])
        assert {"nas", "efficient-attention", "mqar"} <= set(meta["tags"]) and meta[
            "pipeline_tag"
        ] == "text-generation"
        (index,) = meta["model-index"]
        results = {r["dataset"]["split"]: r["metrics"][0] for r in index["results"]}
        assert results["test"] == {"type": "accuracy", "value": info["after"]["test_metric"]}
        assert results["val"]["value"] == info["after"]["val_metric"]
        assert Arch.load(d / "arch.yaml").signature == info["signature"]
    # a fresh process: the pt2 program needs no platform, load_exported needs no supernet/nas
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out / "trial_0")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_inherited_weights_equal_the_supernet_subnet(run_dir, tmp_path) -> None:
    """Without fine-tuning, the export is exactly the supernet's subnet (weights inherited)."""
    from supernet.io import load_supernet

    out = tmp_path / "e"
    assert (
        main([f"run={run_dir}", "trials=fastest", f"out={out}", "onnx.dynamic=false", *FAST]) == 0
    )
    assert [p.name for p in out.glob("trial_*")] == ["trial_1"]
    net, _ = load_supernet(run_dir / "supernet")
    model = load_exported(out / "trial_1")
    net.activate(model.arch)
    x = torch.randint(0, 16, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.eval()(x), rtol=0, atol=1e-6)
    info = json.loads((out / "trial_1" / "export.json").read_text())
    assert (
        info["portable"]["dynamic_axes"] == {} and info["weights"] == "inherited from the supernet"
    )


def test_cards_of_trials_off_the_front(run_dir, tmp_path) -> None:
    """A repeat of an architecture on the front shows the row of the trial standing for it; a
    dominated trial says it is not on the front."""
    out = tmp_path / "e"
    assert main([f"run={run_dir}", "trials=[4,2]", f"out={out}", "onnx.dynamic=false", *FAST]) == 0
    row = next(r for r in csv.DictReader((run_dir / "pareto.csv").open()) if r["trial"] == "1")
    repeat, dominated = ((out / f"trial_{n}" / "README.md").read_text() for n in (4, 2))
    assert "Trial 4 evaluated the same architecture as trial 1" in repeat
    assert "| " + " | ".join(row.values()) + " |" in repeat and "not on the" not in repeat
    assert "Trial 2 is not on the search's Pareto front (no row in `pareto.csv`)" in dominated


def test_choose_trials(run_dir) -> None:
    study = optuna.load_study(
        study_name="s",
        storage=f"sqlite:///{run_dir / 'study.db'}",
        sampler=optuna.samplers.RandomSampler(),
    )
    numbers = lambda sel, d="maximize": [t.number for t in choose_trials(study, sel, d)]  # noqa: E731
    assert sorted(t.number for t in study.best_trials) == [0, 1, 4]  # 4 repeats 1's architecture
    assert numbers("pareto") == [0, 1] and numbers("best") == [0] and numbers("fastest") == [1]
    assert numbers("best", "minimize") == [1] and numbers([2, 0, 2]) == [2, 0] and numbers(3) == [3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trials=[9]"], "no completed trial 9 in study 's'; valid: 0, 1, 2, 3, 4"),
        (["trials=slowest"], "trials must be pareto, best, fastest"),
        (["retrain=true"], "set finetune_steps=K > 0"),
        (
            ["trials=[3]"],
            "trial 3: invalid `arch` user attribute: Arch.",
        ),  # fails inside the export, after the first checks
        (["run=/nonexistent"], "no run.json there"),
    ],
)
def test_errors_are_one_line_and_leave_existing_output(
    run_dir, tmp_path, capsys, args, message
) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main([f"run={run_dir}", *args, f"out={out}", "overwrite=true", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]  # no partial folder left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # never replaced by a failed run
    assert main([f"run={run_dir}", *args, f"out={out}", *FAST]) == 2
    assert "already exists; choose another folder or add overwrite=true" in capsys.readouterr().err


def test_study_from_storage_names_its_run(run_dir, tmp_path, capsys) -> None:
    storage = f"storage=sqlite:///{run_dir / 'study.db'}"
    for args, message in (
        ([storage, "study_name=s", "trials=[9]"], "no completed trial 9 in study 's'"),  # run found
        ([storage, "study_name=nope"], "no study 'nope' in sqlite:///"),
        ([], "give run=RUN_DIR, or storage=URL and study_name=NAME"),
    ):
        assert main([*args, f"out={tmp_path / 'x'}", *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_load_exported_checks_its_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="arch.yaml is missing"):
        load_exported(tmp_path)


def test_pooling_window_sum_exports_to_onnx(tmp_path) -> None:
    """``pooling`` sums windows with avg_pool2d(divisor_override=1), which onnxscript ignores."""
    head = {"kind": "image_cls", "num_classes": 3, "image_size": 4, "patch_size": 2, "in_chans": 1}
    layer = {
        "mixer": {"name": "pooling", "pool_size": 3},
        "channel": {"name": "mlp", "ratio": 2},
        "norm": "layernorm",
    }
    model = build_model(Arch.from_dict({"dim": 16, "head_dim": 8, "head": head, "layers": [layer]}))
    report = write_portable(model, torch.randn(1, 1, 4, 4), tmp_path)
    assert report.onnx_max_abs_diff <= 1e-5 and report.dynamic_axes == {0: "batch"}


def test_image_export_loads_through_timm(tmp_path) -> None:
    import timm

    from search_spaces import save_exported
    from search_spaces.exported import register_timm

    head = {"kind": "image_cls", "num_classes": 3, "image_size": 4, "patch_size": 2, "in_chans": 1}
    layer = {
        "mixer": {"name": "softmax", "heads": 2},
        "channel": {"name": "mlp", "ratio": 2},
        "norm": "layernorm",
    }
    model = build_model(Arch.from_dict({"dim": 16, "head_dim": 8, "head": head, "layers": [layer]}))
    save_exported(model, tmp_path)
    name = register_timm(tmp_path)
    assert register_timm(tmp_path) == name and name in timm.list_models("nas_*")
    created = timm.create_model(name, pretrained=True).eval()
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(created(x), model.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="fixed.*num_classes.: 5"):
        timm.create_model(name, num_classes=5)
    save_exported(
        build_model(
            Arch.from_dict(
                {**model.arch.to_dict(), "head": {"kind": "lm", "vocab_size": 8, "max_len": 8}}
            )
        ),
        tmp_path / "lm",
    )
    with pytest.raises(ValueError, match="head.kind='lm'"):
        register_timm(tmp_path / "lm")
