"""The supernet's training loader: its dataset and collation, batches in ``StepSampler``'s
resumable order (``common.step_sampler``)."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import DataLoader

from common.step_sampler import StepSampler


def resumable_loader(
    loader: DataLoader, total_steps: int, current_step: Callable[[], int], seed: int
) -> DataLoader:
    """``loader``'s dataset and collation, batch ``s`` depending only on (seed, s)."""
    sampler = StepSampler(len(loader.dataset), loader.batch_size, total_steps, current_step, seed)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        collate_fn=loader.collate_fn,
        drop_last=True,
        num_workers=loader.num_workers,
    )
