"""Data order that survives a kill: the examples trained at step ``s`` are a pure function of
(seed, s). ``StepSampler`` walks an endless stream of seeded permutations of the dataset and,
whenever a training loop starts iterating (at the start, or after resuming from a checkpoint),
begins at the position of the current global step. So a resumed run sees exactly the batches an
uninterrupted run would have seen, whatever Lightning's own epoch bookkeeping does.

Across processes (DDP, ``trainer.devices=N``) step ``s`` takes ``N x batch_size`` positions of
the same stream and rank ``r`` the ``r``-th slice: N processes train on exactly the examples one
process with an N-fold batch would."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


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

    @staticmethod
    def rank_and_world() -> tuple[int, int]:
        """This process's rank and the number of processes (asked when iterating, once
        Lightning has set up the process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

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
        rank, world = self.rank_and_world()
        if world == 1:
            return iter(self.stream(self.current_step() * self.batch_size, len(self)))
        step_size = self.batch_size * world  # the global batch of one step
        mine = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        return iter(
            [
                i
                for step in range(self.current_step(), self.total_steps)
                for i in self.stream(step * step_size, step_size)[mine]
            ]
        )
