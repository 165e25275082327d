"""Training data order that survives a kill: the batch trained at step ``s`` is a pure function
of (seed, s). The sampler walks an endless stream of seeded permutations of the dataset and,
whenever Lightning starts iterating (at the start, or after resuming from a checkpoint), begins
at the position of the trainer's current global step. So a resumed run sees exactly the batches
an uninterrupted run would have seen, whatever Lightning's own epoch bookkeeping does."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class StepSampler(Sampler[int]):
    """Indices for steps ``current_step() .. total_steps`` of ``batch_size`` each; the dataset of
    ``size`` examples is cycled, each pass in a new permutation seeded by (seed, pass)."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        total_steps: int,
        current_step: Callable[[], int],
        seed: int = 0,
    ) -> None:
        self.size, self.batch_size, self.total_steps = size, batch_size, total_steps
        self.current_step, self.seed = current_step, seed

    def __len__(self) -> int:
        return max(0, self.total_steps - self.current_step()) * self.batch_size

    def stream(self, start: int, count: int) -> list[int]:
        """``count`` indices from position ``start`` of the endless shuffled stream."""
        out: list[int] = []
        while len(out) < count:
            cycle, offset = divmod(start + len(out), self.size)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            perm = torch.randperm(self.size, generator=g)
            out.extend(perm[offset : offset + count - len(out)].tolist())
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.stream(self.current_step() * self.batch_size, len(self)))


def resumable_loader(
    loader: DataLoader, total_steps: int, current_step: Callable[[], int], seed: int
) -> DataLoader:
    """``loader``'s dataset and collation, batch ``s`` depending only on (seed, s)."""
    sampler = StepSampler(len(loader.dataset), loader.batch_size, total_steps, current_step, seed)
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
        drop_last=True, num_workers=loader.num_workers,
    )  # fmt: skip
