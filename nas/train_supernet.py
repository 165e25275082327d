"""``python -m nas.train_supernet +space=NAME [task=NAME] [train.max_steps=N] [out=DIR]``

Trains the supernet of a space on a task (``supernet.train.train_supernet``: Lightning, sandwich
rule, in-place distillation, a checkpoint every ``train.val_every`` steps; the same command
resumes), and writes into ``out``: ``supernet.safetensors`` + ``supernet.json`` (what a search
reuses with ``supernet_path=``), ``subnets.csv`` (the reference subnets before and after),
``config.yaml``, ``logs/`` and ``checkpoints/``. ``trainer.devices=N`` trains in N processes.
The command lives in ``nas`` because the tasks do; the supernet package never imports them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from nas.tasks import get_task
from search_spaces.checks import user_input
from search_spaces.cli import UsageError, import_plugins, run_cli, space_from_config
from supernet.train import check_training, train_supernet


def check_out(out: Path) -> Path:
    """``out`` as a folder to write into: it may exist (training resumes), but not as a file."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out} is a file, not a folder")
    return out


def train(cfg: DictConfig) -> int:
    import_plugins(cfg)
    space = space_from_config(cfg)
    with user_input("task"):
        task = get_task(cfg.task)
    check_training(cfg)
    out = check_out(Path(cfg.out or f"runs/supernet-{space.name}-{task.name}"))
    train_supernet(cfg, space, task, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    torch.set_float32_matmul_precision("high")
    return run_cli(train, "train_supernet", argv)


if __name__ == "__main__":
    sys.exit(main())
