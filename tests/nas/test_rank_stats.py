"""``benchmarks/rank_stats.py``: Kendall τ with bootstrap intervals, the perfect-ranker bound and
the within-type account of signal against the supernet's error."""

from __future__ import annotations

import pytest

from benchmarks.rank_stats import (
    perfect_ranker,
    perfect_ranker_line,
    ranking_stats,
    render_errors,
    within_type_errors,
)


def test_ranking_stats_overall_within_types_and_per_type() -> None:
    """One type ranked exactly, one exactly reversed: τ 1 and -1 there, their mean 0 within; the
    types' offsets disagree too, so τ over all archs is negative."""
    rows = [dict(type="a", inherited=v, standalone=v) for v in (1.0, 2.0, 3.0)]
    rows += [dict(type="b", inherited=v, standalone=-v) for v in (10.0, 11.0, 12.0)]
    stats = ranking_stats(rows, n_boot=50, seed=0)
    assert stats["a"][0] == pytest.approx(1.0) and stats["b"][0] == pytest.approx(-1.0)
    assert stats["within"][0] == pytest.approx(0.0)
    assert stats["all"][0] == pytest.approx(-0.6)  # 3 concordant pairs, 3 + 9 discordant


def test_perfect_ranker_bound() -> None:
    """The true order scores above the run-to-run agreement against one noisy run, higher still
    against the mean of two, and close to 1 when runs barely differ."""
    noisy = perfect_ranker(0.5, 20, sims=500)
    assert 0.5 < noisy["one"] < 0.75 and noisy["two"] > noisy["one"] and 0 < noisy["p70"] < 1
    assert perfect_ranker(0.95, 20, sims=500)["one"] > 0.9
    assert "no estimate" in perfect_ranker_line("all", float("nan"), 20)
    assert "expected τ **" in perfect_ranker_line("all", 0.5, 20)


def test_within_type_errors_separate_signal_noise_and_a_shared_bias() -> None:
    """Per type: the spread of the stand-alone means, half the seed-to-seed difference, the
    supernet's error after removing the type's common offset; two supernets with the same bias
    rank alike (τ 1 with each other) however badly they rank against stand-alone training."""
    truth = {"a": [1.0, 2.0, 3.0], "b": [5.0, 5.5, 6.0]}
    bias = [0.0, 3.0, -3.0]  # the same per-arch error in both supernets: it reverses orders
    pairs = [
        dict(type=t, first=v - 0.1, second=v + 0.1, inherited=v + 10 + bias[i])
        for t, values in truth.items()
        for i, v in enumerate(values)
    ]
    other = [dict(inherited=p["inherited"] + 7) for p in pairs]  # another offset, same bias
    errors = within_type_errors(pairs, [other], n_boot=50)
    a, b = errors["per_type"]["a"], errors["per_type"]["b"]
    assert a["archs"] == 3 and a["spread"] == pytest.approx((2 / 3) ** 0.5)
    assert b["spread"] == pytest.approx((0.5 / 3) ** 0.5)
    assert a["noise"] == pytest.approx(0.1) and b["noise"] == pytest.approx(0.1)
    assert a["error"] == pytest.approx(6**0.5) and b["error"] == pytest.approx(6**0.5)
    assert errors["agreement"]["all"][0] == pytest.approx(1.0)
    assert errors["agreement"]["within"][0] == pytest.approx(1.0)
    text = render_errors(errors)
    assert "| a | 3 | 0.8165 | 0.1000 | 2.4495 | 0.33 |" in text and "**1.000**" in text
    assert "against each other" not in render_errors(within_type_errors(pairs, [], n_boot=50))
