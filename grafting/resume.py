"""Resuming a graft that was killed: its finished work waits in ``.NAME-resume/`` beside ``out``.

- ``stage1.safetensors`` + ``stage1.json``: the new operators after stage 1 and its result, so a
  rerun skips stage 1;
- ``checkpoints/last.ckpt``: stage 2's Lightning checkpoint every ``stage2.checkpoint_every``
  steps (trainable weights, optimiser and schedule; the frozen host is not copied).

The folder belongs to one configuration (``key.txt``, a hash of everything that shapes the
result); a rerun with another one discards it. A finished graft removes it. Stage 2's batches
follow ``common.step_sampler.StepSampler``, so the resumed graft equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from common.atomic import atomic_write_text

# settings a graft's weights ignore (plugins: how operators are found, not which the plan names)
NOT_SHAPING = ("out", "overwrite", "progress", "report", "plugins")


def config_key(cfg: dict[str, Any]) -> str:
    shaping = {k: v for k, v in cfg.items() if k not in NOT_SHAPING}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


class ResumeDir:
    """The resume folder of a graft into ``out`` with configuration ``cfg``."""

    def __init__(self, out: Path, cfg: dict[str, Any]) -> None:
        self.path = out.parent / f".{out.name}-resume"
        self.key = config_key(cfg)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def open(self) -> bool:
        """Prepare the folder; True when it holds work of this configuration to resume."""
        key_file = self.path / "key.txt"
        if key_file.is_file() and key_file.read_text() == self.key:
            return True
        if self.path.exists():
            print(f"discarding {self.path} (an unfinished graft with another configuration)")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        atomic_write_text(key_file, self.key)
        return False

    def save_stage1(self, wrappers: dict[Any, nn.Module], result: dict[str, Any]) -> None:
        tensors = {
            f"{_name(key)}/{k}": v.detach().contiguous()
            for key, w in wrappers.items()
            for k, v in w.state_dict().items()
        }
        tmp = self.path / ".stage1.safetensors.tmp"
        save_file(tensors, tmp)
        tmp.replace(self.path / "stage1.safetensors")
        atomic_write_text(self.path / "stage1.json", json.dumps(result, default=str))

    def load_stage1(self, wrappers: dict[Any, nn.Module]) -> dict[str, Any] | None:
        """Stage 1's result, its weights loaded into ``wrappers``; None if it did not finish."""
        done = self.path / "stage1.json"
        if not done.is_file():
            return None
        tensors = load_file(self.path / "stage1.safetensors")
        for key, w in wrappers.items():
            prefix = f"{_name(key)}/"
            w.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        return json.loads(done.read_text())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _name(key: Any) -> str:
    return ".".join(map(str, key)) if isinstance(key, tuple) else str(key)
