"""A graft killed with SIGKILL in stage 2 resumes from its last checkpoint (stage 1 is not
redone) and ends with the same weights as an uninterrupted graft."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from grafting.graft import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "stage1.steps=3",
    "stage2.steps=300",
    "stage2.checkpoint_every=5",
    "text.calib_sentences=8",
    "text.calib_passages=2",
    "text.passage_tokens=[64,128]",
    "text.batch_size=4",
    "report.sentences=8",
    "report.passages=2",
    "report.lengths=[32]",
    "report.rounds=1",
    "report.min_run_time=0.01",
    "report.ood_source=null",
    "plan=linear_50",
]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "grafted.safetensors")


def test_a_killed_graft_resumes_to_the_uninterrupted_result(
    tiny_models, text_file, tmp_path, capsys
) -> None:
    args = [f"base={tiny_models['bert']}", f"text.source={text_file}", *SMALL]
    assert main([*args, f"out={tmp_path / 'whole'}", "progress=false"]) == 0

    out = tmp_path / "killed"
    checkpoint = tmp_path / ".killed-resume" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grafting.graft", *args, f"out={out}", "progress=false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_file(), proc.stderr.read().decode()[-2000:]
    assert not out.exists()  # nothing that could load as a finished graft

    capsys.readouterr()
    assert main([*args, f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "stage 1: reusing its result" in printed and "stage 2: resuming from" in printed
    assert not (tmp_path / ".killed-resume").exists()  # a finished graft cleans up
    whole, resumed = weights(tmp_path / "whole"), weights(out)
    assert whole.keys() == resumed.keys()
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-6
