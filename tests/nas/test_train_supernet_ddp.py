"""Supernet training in two processes (DDP, gloo on CPU) equals one process with the doubled
batch: every rank trains the same subnets at the same step on its half of the same examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from nas.train_supernet import main

TINY = [
    "+space=efficient_attn",
    "task=mqar",
    "train.max_steps=4",
    "train.teacher_steps=1",
    "train.val_every=2",
    "train.limit_val_batches=1",
    "train.warmup_steps=1",
    "report.val_batches=1",
    "report.random_subnets=0",
    "task.num_train=64",
    "task.num_val=16",
    "task.num_test=16",
]
ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_equal_one_with_the_doubled_batch(tmp_path) -> None:
    assert main([*TINY, "train.batch_size=16", f"out={tmp_path / 'one'}"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [*TINY, "train.batch_size=8", "trainer.devices=2", f"out={tmp_path / 'two'}"]
    done = subprocess.run(
        [sys.executable, "-m", "nas.train_supernet", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("before -> after training") == 1  # one process reports and saves
    assert main([*TINY, "train.batch_size=8", f"out={tmp_path / 'half'}"]) == 0
    one, two, half = (
        load_file(tmp_path / name / "supernet.safetensors") for name in ("one", "two", "half")
    )
    assert one.keys() == two.keys()
    assert max_difference(one, two) < 1e-4
    # one process on half the examples lands far away: the comparison can fail
    assert max_difference(one, half) > 20 * max_difference(one, two)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)
