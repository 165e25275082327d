"""The one learning-rate schedule: warm-up, cosine to a floor, defined for every step count."""

from __future__ import annotations

import pytest
import torch

from common.schedule import warmup_cosine, warmup_fraction


def test_warmup_then_cosine_to_the_floor() -> None:
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.55)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.1)
    assert warmup_cosine(20, 4, 20, floor=0.0) == pytest.approx(0.0)


@pytest.mark.parametrize("steps", [1, 2, 10, 11, 100])
def test_every_step_count_gets_a_finite_schedule(steps: int) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warmup = warmup_fraction(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, steps, 0.0))
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0.0 <= r <= 1.0 for r in rates) and max(rates) == pytest.approx(1.0)
    assert warmup == (steps // 10)
