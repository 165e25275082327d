"""The one learning-rate schedule of the platform: linear warm-up, then cosine decay to a floor.

Supernet training, stand-alone training and both graft stages use it through
``torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, ...))``. Unlike
``OneCycleLR`` it is defined for every step count >= 1 (``OneCycleLR`` divides by zero when its
warm-up phase rounds to no step, e.g. 10 steps at ``pct_start=0.1``).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, floor: float = 0.1) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based): ``(step + 1) / warmup_steps``
    during the warm-up, then a cosine from 1 down to ``floor`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_fraction(steps: int, fraction: float = 0.1) -> int:
    """Warm-up steps for a run of ``steps``: ``fraction`` of them, rounded down (0 for short runs)."""
    return int(fraction * steps)
