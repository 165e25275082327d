"""The statistics of ranking fidelity, shared by ``ranking.py``, ``ranking_ceiling.py`` and
``graft_search.py``: Kendall τ with bootstrap intervals (overall, per mixer type and the mean
within types), what a perfect ranker could reach against noisy stand-alone runs, and, per type,
the signal a ranker must resolve against the supernet's error."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import kendalltau

PERFECT_DRAWS = 4000  # simulated sets of archs behind each perfect-ranker estimate


def tau(x, y) -> float:
    """Kendall τ-b; NaN where undefined (fewer than 2 archs, or one side constant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on the undefined cases; NaN says it
        return float(kendalltau(x, y).statistic)


def bootstrap(groups: list[np.ndarray], stat, n: int, seed: int) -> tuple[float, float, int]:
    """90% percentile interval of ``stat(resampled groups)``, each group of indices resampled
    with replacement on its own; resamples where ``stat`` is undefined (NaN) are dropped."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        value = stat([g[rng.integers(0, len(g), len(g))] for g in groups])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(values, [5, 95])
    return float(lo), float(hi), len(values)


def ranking_stats(rows: list[dict], n_boot: int, seed: int) -> dict:
    """τ overall, per type and the mean of the within-type τs, each with its interval."""
    inh = np.array([r["inherited"] for r in rows])
    alone = np.array([r["standalone"] for r in rows])
    types = sorted({r["type"] for r in rows if r["type"] != "mixed"})
    by_type = {t: np.array([i for i, r in enumerate(rows) if r["type"] == t]) for t in types}
    with np.errstate(all="ignore"):
        out = {
            "all": (
                tau(inh, alone),
                *bootstrap(
                    [np.arange(len(rows))], lambda g: tau(inh[g[0]], alone[g[0]]), n_boot, seed
                ),
            )
        }
        for t, idx in by_type.items():
            out[t] = (
                tau(inh[idx], alone[idx]),
                *bootstrap([idx], lambda g: tau(inh[g[0]], alone[g[0]]), n_boot, seed),
            )

        def mean_tau(groups) -> float:
            taus = [tau(inh[g], alone[g]) for g in groups]
            taus = [t for t in taus if np.isfinite(t)]
            return float(np.mean(taus)) if taus else float("nan")

        groups = list(by_type.values())
        out["within"] = (mean_tau(groups), *bootstrap(groups, mean_tau, n_boot, seed))
    return out


def _tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall τ of each row of ``a`` with the same row of ``b`` (continuous values: no ties)."""
    i, j = np.triu_indices(a.shape[1], 1)
    return (np.sign(a[:, i] - a[:, j]) * np.sign(b[:, i] - b[:, j])).mean(axis=1)


def perfect_ranker(
    run_to_run: float, n: int, sims: int = PERFECT_DRAWS, seed: int = 0
) -> dict[str, float]:
    """A perfect ranker against noisy stand-alone runs: ``n`` archs of true quality T ~ N(0, 1),
    each run measuring T + N(0, s²), s set (bisection) so that two runs agree at Kendall τ
    ``run_to_run``. Returns the expected τ of the true order with one run (``one``), the chance
    that it reaches 0.7 (``p70``) and its expected τ with the mean of two runs (``two``)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((sims, n))
    e1, e2 = rng.standard_normal((sims, n)), rng.standard_normal((sims, n))
    lo, hi = 0.0, 100.0  # noise scale; τ between two runs falls as it grows
    for _ in range(40):
        mid = (lo + hi) / 2
        if _tau_rows(truth + mid * e1, truth + mid * e2).mean() > run_to_run:
            lo = mid
        else:
            hi = mid
    one = _tau_rows(truth, truth + lo * e1)
    two = _tau_rows(truth, truth + lo * (e1 + e2) / 2)
    return {
        "noise": lo,
        "one": float(one.mean()),
        "p70": float((one >= 0.7).mean()),
        "two": float(two.mean()),
    }


def perfect_ranker_line(label: str, run_to_run: float, n: int) -> str:
    """A Markdown list item: ``perfect_ranker`` for ``n`` archs whose runs agree at ``run_to_run``."""
    if not (math.isfinite(run_to_run) and run_to_run > 0):
        return f"- {label}: seed vs seed τ {run_to_run:.3f}, no estimate (not positive)"
    b = perfect_ranker(run_to_run, n)
    return (
        f"- {label} (seed vs seed τ {run_to_run:.3f}, {n} archs): expected τ **{b['one']:.2f}** "
        f"against one stand-alone run (≥ 0.7 in {b['p70']:.0%} of draws), {b['two']:.2f} "
        "against the mean of two runs"
    )


def within_type_errors(pairs: list[dict], others: list[list[dict]], n_boot: int) -> dict:
    """Why within-type τ is what it is, in bits (or the task's unit): per mixer type, the RMS
    spread of the archs' mean stand-alone results around the type's mean (the signal a ranker
    must resolve), the RMS noise of that mean (half the seed-to-seed difference), and the RMS of
    each supernet's error (inherited minus the stand-alone mean, which carries that noise too),
    centred per type (an offset common to a type changes no order within it), averaged over the
    supernets. ``agreement`` is the first two supernets' Kendall τ with each other
    (``ranking_stats``): far above their τ with stand-alone training, their errors are systematic,
    and more supernet seeds would not average them away."""
    mean = np.array([(p["first"] + p["second"]) / 2 for p in pairs])
    noise = np.array([(p["second"] - p["first"]) / 2 for p in pairs])
    scores = [np.array([p["inherited"] for p in pairs])]
    scores += [np.array([float(r["inherited"]) for r in other]) for other in others]
    types = np.array([p["type"] for p in pairs])
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    centred = [np.zeros(len(pairs)) for _ in scores]
    per_type = {}
    for t in sorted(set(types)):
        idx = types == t
        for c, score in zip(centred, scores, strict=True):
            err = score[idx] - mean[idx]
            c[idx] = err - err.mean()
        per_type[t] = dict(
            archs=int(idx.sum()),
            spread=rms(mean[idx] - mean[idx].mean()),
            noise=rms(noise[idx]),
            error=float(np.mean([rms(c[idx]) for c in centred])),
        )
    agreement = None
    if len(scores) > 1:
        ranked = [
            dict(type=t, inherited=x, standalone=y)
            for t, x, y in zip(types, scores[0], scores[1], strict=True)
        ]
        agreement = ranking_stats(ranked, n_boot, 0)
    return dict(per_type=per_type, agreement=agreement, supernets=len(scores))


def render_errors(errors: dict) -> str:
    """``within_type_errors`` as a Markdown table and a line on the errors' agreement."""
    lines = [
        "Within a type, signal against error (RMS around the type's mean, in the metric's unit; "
        f"supernet error averaged over {errors['supernets']} supernet(s), `within_type_errors`):",
        "",
        "| type | archs | stand-alone spread | noise of the mean of two runs | supernet error "
        "| spread / error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t, e in errors["per_type"].items():
        ratio = e["spread"] / e["error"] if e["error"] else math.inf
        lines.append(
            f"| {t} | {e['archs']} | {e['spread']:.4f} | {e['noise']:.4f} | {e['error']:.4f} "
            f"| {ratio:.2f} |"
        )
    agree = errors["agreement"]
    if agree is not None:
        lines += [
            "",
            "The first two supernets against each other: Kendall τ "
            f"**{agree['all'][0]:.3f}** over all archs, **{agree['within'][0]:.3f}** mean within a "
            "type (90% intervals "
            f"[{agree['all'][1]:.3f}, {agree['all'][2]:.3f}] and "
            f"[{agree['within'][1]:.3f}, {agree['within'][2]:.3f}]). Where this is far above "
            "their τ with stand-alone training, both misjudge the same archs the same way: a "
            "systematic error of weight sharing, which more supernet seeds do not average away.",
        ]
    return "\n".join(lines)
