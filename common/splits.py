"""A seeded, stratified partition of a labelled set into train / val / test indices, shared by the
digits task (``nas.tasks.digits``) and the DiT teacher's digits (``grafting.dit.data``).

Not sklearn's ``train_test_split(stratify=...)``: it draws another partition for the same seed
(numpy's generator, its own rounding per class), which would move images between the splits of
existing runs (a resumed search would score on images its supernet trained on; a trained DiT
teacher's held-out images would become training images of the metric).
"""

from __future__ import annotations

import torch


def stratified_split(
    labels: torch.Tensor, fracs: tuple[float, float], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of (train, val, test), each sorted: per class, ``round(fracs[1] * n)`` images go
    to test and ``round(fracs[0] * n)`` to val, chosen by a permutation drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test, n_val = round(fracs[1] * len(idx)), round(fracs[0] * len(idx))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return tuple(torch.cat(p).sort().values for p in parts)  # type: ignore[return-value]
