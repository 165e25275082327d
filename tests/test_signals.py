"""Ctrl-C (SIGINT) stops a command with exit status 130 and one line, no traceback: during
supernet training (Lightning turns it into exit status 1 unless told otherwise) and in the middle
of a search (Optuna logs the interrupted trial with its traceback unless told otherwise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ["task=mqar", "task.num_train=64", "task.num_val=16", "task.num_test=16"]
TRAIN = [
    "train.teacher_steps=1",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=0",
]


def interrupt_when(argv: list[str], ready, log: Path) -> tuple[int, str]:
    """Run ``python -m argv``, send SIGINT once ``ready()``; return the status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # a shell starts background jobs with SIGINT ignored, and Python then installs no handler:
    # give the child the default disposition, as a terminal would
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,
        )
        try:
            deadline = time.monotonic() + 300
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, f"ended before the interrupt: {proc.stderr.read()[-2000:]}"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, err


def test_ctrl_c_during_supernet_training(tmp_path) -> None:
    out = tmp_path / "sn"
    argv = [
        "nas.train_supernet",
        "+space=efficient_attn",
        *TASK,
        *TRAIN,
        "train.max_steps=100000",
        "train.val_every=2",
        f"out={out}",
    ]
    ready = lambda: (out / "checkpoints" / "last.ckpt").is_file()  # noqa: E731 - training
    status, err = interrupt_when(argv, ready, tmp_path / "log")
    assert status == 130 and err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    assert not (out / "supernet.safetensors").exists()  # an unfinished supernet is not saved


def test_ctrl_c_during_a_search(tmp_path) -> None:
    run = tmp_path / "run"
    argv = [
        "nas.search",
        "+space=efficient_attn",
        *TASK,
        *TRAIN,
        "train.max_steps=2",
        "train.val_every=1",
        "search.n_trials=100000",
        "search.val_batches=1",
        "latency.shape=[1,32]",
        "latency.repeats=1",
        "latency.min_run_time=0.2",
        f"run_dir={run}",
        f"latency.cache_dir={tmp_path / 'lat'}",
    ]
    seen: list[float] = []

    def trials_running() -> bool:  # the study has been open for 3 s: trials are under way
        if (run / "study.db").is_file() and not seen:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 3

    status, err = interrupt_when(argv, trials_running, tmp_path / "log")
    assert status == 130 and err.strip().splitlines()[-1] == "interrupted", err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
