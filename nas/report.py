"""The search's report: the Pareto front re-evaluated on the test split against the baseline,
as a printed table, ``pareto.csv`` and one ``arch.yaml`` per member (plots: ``nas.plots``)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from optuna.trial import FrozenTrial

from common.atomic import atomic_path
from search_spaces import Arch

COLUMNS = (
    "trial",
    "val_metric",
    "test_metric",
    "latency_ms",
    "latency_ratio",
    "latency_source",
    "params",
    "flops",
    "signature",
    "beats_baseline",
)


@dataclass(frozen=True)
class ParetoMember:
    """One row of ``pareto.csv``; ``arch`` is written beside it as ``pareto/trial_N/arch.yaml``."""

    trial: int
    val_metric: float
    test_metric: float
    latency_ms: float
    latency_ratio: float
    latency_source: str
    params: int
    flops: int
    signature: str
    beats_baseline: bool
    arch: Arch

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in COLUMNS}


def better_or_equal(a: float, b: float, direction: str) -> bool:
    return a >= b if direction == "maximize" else a <= b


def member(
    trial: FrozenTrial,
    test_metric: float,
    baseline: ParetoMember | None,
    direction: str,
    latency: dict | None = None,
) -> ParetoMember:
    """A report row for ``trial``; ``latency`` overrides the trial's (a verified measurement)."""
    a = {**trial.user_attrs, **(latency or {})}
    beats = baseline is not None and (
        a["latency_ratio"] < baseline.latency_ratio
        and better_or_equal(test_metric, baseline.test_metric, direction)
    )
    return ParetoMember(
        trial.number,
        a["val_metric"],
        test_metric,
        a["latency_ms"],
        a["latency_ratio"],
        a["latency_source"],
        a["params"],
        a["flops"],
        a["signature"],
        bool(beats),
        Arch.from_dict(a["arch"]),
    )


def write_csv(path: Path, members: Sequence[ParetoMember]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for m in members:
            writer.writerow(m.row())


def write_archs(directory: Path, members: Sequence[ParetoMember]) -> None:
    for m in members:
        m.arch.save(directory / f"trial_{m.trial}" / "arch.yaml")


def describe(arch: Arch) -> str:
    """``d128 softmax/mlp x2 linear/swiglu``: width, then runs of equal layers."""
    names = [f"{layer.mixer.name}/{layer.channel.name}" for layer in arch.layers]
    runs = [(k, len(list(g))) for k, g in itertools.groupby(names)]
    return f"d{arch.dim} " + " ".join(k if n == 1 else f"{k} x{n}" for k, n in runs)


def format_table(
    members: Sequence[ParetoMember], baseline: ParetoMember, metric: str, direction: str
) -> str:
    """The front as text, fastest first, the baseline last, with Δ metric and speed-up."""
    lines = [
        f"{'trial':>5} {'val ' + metric:>13} {'test ' + metric:>14} {'Δ test':>8} "
        f"{'latency ms':>11} {'× baseline':>10} {'params':>9}  beats  architecture"
    ]
    for m in [*(m for m in members if m.trial != baseline.trial), baseline]:
        mark = "base" if m is baseline else ("yes" if m.beats_baseline else "")
        lines.append(
            f"{m.trial:>5} {m.val_metric:>13.4f} {m.test_metric:>14.4f} "
            f"{m.test_metric - baseline.test_metric:>+8.4f} {m.latency_ms:>11.2f} "
            f"{m.latency_ratio:>10.3f} {m.params:>9,}  {mark:<5}  {describe(m.arch)}"
        )
    winners = [m for m in members if m.beats_baseline]
    if winners:
        best = min(winners, key=lambda m: m.latency_ratio)
        lines.append(
            f"{len(winners)} of {len(members)} Pareto members beat the baseline; fastest: trial "
            f"{best.trial}, {1 / best.latency_ratio:.2f}x faster at {metric} "
            f"{best.test_metric:.4f} vs {baseline.test_metric:.4f} ({direction})"
        )
    else:
        lines.append("no Pareto member beats the baseline at equal or better test metric")
    return "\n".join(lines)
