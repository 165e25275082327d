"""Fixed train/val/test splits held as tensors, and the dataloaders over them.

Any task with ``split(name) -> {key: tensor}`` (rows along dim 0), ``seed`` and ``batch_size``
gets its ``datamodule`` from ``SplitsDataModule``; ``FixedSplits`` adds the validation and the
cache of generated splits, so a task only says how to make split ``i`` of ``SPLITS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, StackDataset

SPLITS = ("train", "val", "test")


class HasSplits(Protocol):
    seed: int
    batch_size: int

    def split(self, name: str) -> Mapping[str, torch.Tensor]: ...


def split_index(name: str) -> int:
    """Position of ``name`` in ``SPLITS``; anything else raises naming the valid splits."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
    return SPLITS.index(name)


class SplitsDataModule(L.LightningDataModule):
    """Dataloaders over a task's fixed splits; training batches are shuffled with the task seed."""

    def __init__(self, task: HasSplits, batch_size: int) -> None:
        super().__init__()
        self.task, self.batch_size = task, batch_size

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(self.task.seed) if shuffle else None
        data = StackDataset(**self.task.split(split))  # row i of each tensor, as a dict
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, generator=g)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class FixedSplits:
    """Mixin for a ``Task`` (list it first among the bases): ``split`` and ``datamodule``.

    The subclass implements ``_make_split(index)``, the tensors of split ``SPLITS[index]``
    (rows along dim 0), a deterministic function of its parameters; each split is made once,
    on first use, and cached on the task.
    """

    seed: int
    batch_size: int

    def _make_split(self, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def split(self, name: str) -> dict[str, torch.Tensor]:
        """The whole ``train``/``val``/``test`` split as a dict of tensors (cached)."""
        index = split_index(name)
        cache: dict[str, Any] = self.__dict__.setdefault("_split_cache", {})
        if name not in cache:
            cache[name] = self._make_split(index)
        return cache[name]

    def datamodule(self, batch_size: int | None = None) -> L.LightningDataModule:
        return SplitsDataModule(self, batch_size or self.batch_size)
