"""``python -m nas.train_supernet`` end to end on a tiny budget: outputs, resume, user errors."""

from __future__ import annotations

import csv

from nas.train_supernet import main
from supernet.io import load_supernet

TINY = [
    "+space=efficient_attn",
    "task=mqar",
    "train.max_steps=4",
    "train.teacher_steps=1",
    "train.val_every=2",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=1",
    "task.num_train=64",
    "task.num_val=16",
    "task.num_test=16",
]


def test_train_writes_outputs_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "sn"
    assert main([*TINY, f"out={out}"]) == 0
    for name in ("supernet.safetensors", "supernet.json", "subnets.csv", "config.yaml"):
        assert (out / name).is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((out / "subnets.csv").open()))
    assert [r["subnet"] for r in rows] == ["teacher", "smallest", "baseline", "random0"]
    net, meta = load_supernet(out)
    assert meta["steps"] == 4 and net.space.name == "efficient_attn"
    capsys.readouterr()
    assert main([*TINY, "train.max_steps=6", f"out={out}"]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert load_supernet(out)[1]["steps"] == 6


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys) -> None:
    for argv, message in (
        ([], "choose a search space with +space=NAME; available: efficient_attn"),
        (["+space=nope"], "unknown search space; available:"),
        (["+space=efficient_attn", "train.bogus=1"], "Could not override 'train.bogus'"),
    ):
        assert main([*argv, f"out={tmp_path}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
