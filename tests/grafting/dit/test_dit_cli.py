"""``python -m grafting.dit.train`` / ``.sample`` / ``.metric`` end to end on a tiny DiT and a few
steps: the outputs load, the run is a function of its seed, ``--help`` and ``--cfg job`` work,
and user errors are one line with exit status 2 that leave existing output alone."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
import yaml
from PIL import Image

from grafting.dit import load_dit
from grafting.dit.train import main as train_main

TINY = [
    "model.depth=1",
    "model.hidden_size=32",
    "model.num_heads=2",
    "steps=3",
    "batch_size=8",
    "grid.per_class=2",
    "grid.steps=2",
    "progress=false",
    "threads=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dit") / "teacher"
    assert train_main([f"out={out}", *TINY]) == 0
    return out


def test_train_writes_a_loadable_teacher(trained):
    names = {p.name for p in trained.iterdir()}
    expected = {"config.json", "model.safetensors", "early", "train.json", "samples.png"}
    assert expected | {"config.yaml", "logs"} <= names
    report = json.loads((trained / "train.json").read_text())
    assert report["steps"] == 3 and report["seed"] == 0 and report["early_step"] == 1
    assert (
        report["image_steps"] == 24
        and report["train_flops"] == 3 * 24 * report["forward_flops_per_image"]
    )
    assert report["final_loss"] > 0 and report["wall_seconds"] > 0 and report["params"] > 10_000
    teacher, early = load_dit(trained), load_dit(trained / "early")
    assert teacher.config.depth == 1 and teacher.config.hidden_size == 32
    assert any(
        not torch.equal(a, b) for a, b in zip(teacher.parameters(), early.parameters(), strict=True)
    )
    assert Image.open(trained / "samples.png").size == (4 * (2 * 17 + 1), 4 * (10 * 17 + 1))


def test_train_is_a_function_of_the_seed(trained, tmp_path):
    assert train_main([f"out={tmp_path / 'again'}", *TINY, "grid.per_class=1"]) == 0
    again = load_dit(tmp_path / "again").state_dict()
    for k, v in load_dit(trained).state_dict().items():
        assert torch.equal(again[k], v), k


def test_train_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert train_main([f"out={tmp_path / 'out'}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not empty (set overwrite=true)" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_train_user_errors(tmp_path, capsys):
    assert train_main([f"out={tmp_path / 'a'}", "preset=DiT-M/2"]) == 2
    assert "unknown DiT preset 'DiT-M/2'" in capsys.readouterr().err
    assert train_main([f"out={tmp_path / 'b'}", "preset=DiT-S/2"]) == 2  # ImageNet latents
    assert "model.name=DiT-S/2 does not fit the digits" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sample_writes_a_grid(trained, tmp_path, capsys):
    from grafting.dit.sample import main

    out = tmp_path / "grid.png"
    argv = [f"base={trained}", f"out={out}", "per_class=3", "steps=2", "sampler=ddpm", "scale=2"]
    assert main(argv) == 0
    assert Image.open(out).size == (2 * (3 * 17 + 1), 2 * (10 * 17 + 1))
    assert main(argv) == 2 and "exists (set overwrite=true)" in capsys.readouterr().err
    assert main([f"base={tmp_path / 'nothing'}", f"out={tmp_path / 'x.png'}"]) == 2
    assert "no DiT model folder or checkpoint file" in capsys.readouterr().err


def test_metric_cli(trained, tmp_path, capsys, monkeypatch):
    from grafting.dit import metric

    quick = metric.train_classifier
    monkeypatch.setattr(metric, "train_classifier", lambda **kw: quick(**{**kw, "epochs": 1}))
    out = tmp_path / "metric.json"
    argv = [
        f"base={trained}",
        "per_class=2",
        "steps=2",
        f"out={out}",
        f"classifier={tmp_path / 'c.safetensors'}",
    ]
    assert metric.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["samples"] == 20 and 0 <= result["accuracy"] <= 1 and result["frechet"] > 0
    assert "held-out real (floor)" in capsys.readouterr().out
    assert (tmp_path / "c.safetensors").is_file()  # cached: the second run reads it
    monkeypatch.setattr(metric, "train_classifier", None)
    assert metric.main(argv + ["out=null"]) == 0


@pytest.mark.parametrize(
    "module,key",
    [
        ("grafting.dit.train", "ema_decay"),
        ("grafting.dit.sample", "cfg_scale"),
        ("grafting.dit.metric", "per_class"),
    ],
)
def test_help_and_cfg_job(module, key, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(module).main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert f"{key}:" in out and "--cfg job" in out and "#" in out
    assert main(["seed=7", "--cfg", "job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 7
    assert list(tmp_path.iterdir()) == []
