"""The search's plots: ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly).

Drawn here rather than with Optuna's ``plot_pareto_front``, which can neither mark the baseline,
label the reported front nor group trials by operator mix (and the html written from it
embedded plotly.js: 4.8 MB). Both plots show every completed trial at the values the search optimised (validation
metric, latency relative to the baseline), coloured and shaped by its token-mixer mix; trials
that violate a constraint are drawn lighter. The reported Pareto members carry a black ring and
their trial number (``#53``) and are joined by the front's step line; the baseline is a star.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from common.atomic import atomic_path
from nas.report import ParetoMember, describe
from nas.study import feasible
from search_spaces import Arch

MAX_MIXES = 7  # legend entries for operator mixes; rarer mixes share "other mixes"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MARKERS = ("o", "s", "^", "D", "v", "p", "h", "X")  # matplotlib names
SYMBOLS = (
    "circle",
    "square",
    "triangle-up",
    "diamond",
    "triangle-down",
    "pentagon",
    "hexagon",
    "x",
)  # plotly names of the same shapes
LATENCY_LABEL = "latency / baseline (lower is better)"


@dataclass(frozen=True)
class Point:
    """One completed trial as drawn."""

    trial: int
    metric: float
    ratio: float
    mix: str
    feasible: bool
    hover: str


def mix_of(arch: Arch) -> str:
    """The token mixers of ``arch`` as a legend entry: ``softmax only``, ``sqa + ssm``, or
    ``3+ mixers``; ``identity`` (no mixer) counts only when it is the only one."""
    names = sorted({layer.mixer.name for layer in arch.layers} - {"identity"}) or ["identity"]
    if len(names) == 1:
        return f"{names[0]} only"
    return " + ".join(names) if len(names) == 2 else "3+ mixers"


def points(
    study: optuna.Study, metric: str, front: Sequence[ParetoMember], baseline: ParetoMember
) -> tuple[list[Point], list[str]]:
    """The completed trials as points, and the mixes of the legend, most frequent first."""
    reported = {m.trial: m for m in front}
    pts = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        arch = Arch.from_dict(t.user_attrs["arch"])
        lines = [
            f"trial #{t.number}" + (" (baseline)" if t.number == baseline.trial else ""),
            f"val {metric} {t.values[0]:.4f}",
            f"latency {t.values[1]:.3f} × baseline",
        ]
        if (m := reported.get(t.number)) is not None:
            lines.append(
                f"Pareto: test {metric} {m.test_metric:.4f}, measured "
                f"{m.latency_ratio:.3f} × baseline"
            )
        if not feasible(t):
            lines.append("infeasible (violates a constraint)")
        lines.append(describe(arch))
        pts.append(
            Point(t.number, t.values[0], t.values[1], mix_of(arch), feasible(t), "<br>".join(lines))
        )
    counts = collections.Counter(p.mix for p in pts if p.trial != baseline.trial)
    if len(counts) > MAX_MIXES + 1:  # keep the legend short
        kept = {mix for mix, _ in counts.most_common(MAX_MIXES)}
        pts = [p if p.mix in kept else replace(p, mix="other mixes") for p in pts]
        counts = collections.Counter(p.mix for p in pts if p.trial != baseline.trial)
    mixes = sorted(counts, key=lambda mix: (mix == "other mixes", -counts[mix], mix))
    return pts, mixes


@dataclass(frozen=True)
class Drawing:
    """What both plots draw."""

    points: list[Point]
    mixes: list[str]  # legend entries, most frequent first
    front: list[Point]  # the reported Pareto members, fastest first
    baseline: Point
    ylabel: str
    title: str
    maximize: bool  # the metric's direction: where the empty side of the front is


def write_plots(
    study: optuna.Study,
    directory: Path,
    metric: str,
    direction: str,
    front: Sequence[ParetoMember],
    baseline: ParetoMember,
) -> list[Path]:
    """Write ``pareto.png`` and ``pareto.html`` into ``directory`` and return their paths.

    ``front`` is the reported Pareto front and ``baseline`` the baseline's report row (see
    ``nas.report``). The html loads plotly.js from its CDN (so it stays tens of kB instead of
    megabytes): viewing it needs internet; ``pareto.png`` shows the same without.
    """
    pts, mixes = points(study, metric, front, baseline)
    members = {m.trial for m in front}
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    title = f"{study.study_name}: {len(pts)} trials" + (f" ({failed} failed)" if failed else "")
    better = "higher" if direction == "maximize" else "lower"
    drawing = Drawing(
        pts,
        mixes,
        sorted((p for p in pts if p.trial in members), key=lambda p: (p.ratio, p.trial)),
        next(p for p in pts if p.trial == baseline.trial),
        f"val {metric} ({better} is better)",
        f"{title}, {len(front)} on the Pareto front",
        direction == "maximize",
    )
    png, html = directory / "pareto.png", directory / "pareto.html"
    for path, draw in ((png, _png), (html, _html)):
        with atomic_path(path) as tmp:  # a failed plot leaves the old file
            draw(tmp, drawing)
    return [png, html]


def _labels(d: Drawing) -> list[tuple[Point, str]]:
    """One label per run of front members closer than 3% of the axes (``#38 #13``), so that
    labels do not print over each other; the baseline has its own."""
    xs, ys = [p.ratio for p in d.points], [p.metric for p in d.points]
    dx, dy = 0.03 * (max(xs) - min(xs) or 1.0), 0.03 * (max(ys) - min(ys) or 1.0)
    runs: list[list[Point]] = []
    for p in d.front:
        if p.trial == d.baseline.trial:
            continue
        q = runs[-1][-1] if runs else None
        if q is not None and abs(p.ratio - q.ratio) < dx and abs(p.metric - q.metric) < dy:
            runs[-1].append(p)
        else:
            runs.append([p])
    return [(run[0], " ".join(f"#{p.trial}" for p in run)) for run in runs]


def _png(path: Path, d: Drawing) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, base = d.baseline, d.baseline.trial
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.axvline(b.ratio, color="0.75", ls=":", lw=1, zorder=0)
    ax.axhline(b.metric, color="0.75", ls=":", lw=1, zorder=0)
    for i, mix in enumerate(d.mixes):
        for ok in (True, False):
            sel = [p for p in d.points if p.mix == mix and p.feasible == ok and p.trial != base]
            ax.scatter(
                [p.ratio for p in sel],
                [p.metric for p in sel],
                s=30,
                marker=MARKERS[i],
                color=COLORS[i],
                alpha=0.85 if ok else 0.25,
                linewidths=0,
                label=mix if ok else None,
                zorder=2,
            )
    if any(not p.feasible for p in d.points):
        ax.scatter([], [], s=30, color="0.5", alpha=0.25, label="infeasible (lighter)")
    ax.plot(
        [p.ratio for p in d.front],
        [p.metric for p in d.front],
        drawstyle="steps-post",
        color="black",
        lw=1.2,
        marker="o",
        ms=10,
        mfc="none",
        mew=1.5,
        label="Pareto front (reported)",
        zorder=4,
    )
    for p, label in _labels(d):  # on the front's empty side: nobody is faster and better
        ax.annotate(
            label,
            (p.ratio, p.metric),
            xytext=(-6, 5 if d.maximize else -6),
            textcoords="offset points",
            ha="right",
            va="bottom" if d.maximize else "top",
            fontsize=8,
        )
    ax.scatter(
        [b.ratio],
        [b.metric],
        s=260,
        marker="*",
        color="gold",
        edgecolors="black",
        linewidths=0.8,
        label="baseline",
        zorder=5,
    )
    ax.annotate(
        "baseline",
        (b.ratio, b.metric),
        xytext=(9, 5 if d.maximize else -6),
        textcoords="offset points",
        va="bottom" if d.maximize else "top",
        fontsize=9,
        fontweight="bold",
    )
    ax.set(xlabel=LATENCY_LABEL, ylabel=d.ylabel, title=d.title)
    ax.margins(0.08)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _html(path: Path, d: Drawing) -> None:
    import plotly.graph_objects as go

    b, side = d.baseline, "top" if d.maximize else "bottom"
    fig = go.Figure()
    for i, mix in enumerate(d.mixes):
        sel = [p for p in d.points if p.mix == mix and p.trial != b.trial]
        fig.add_trace(
            go.Scatter(
                x=[p.ratio for p in sel],
                y=[p.metric for p in sel],
                mode="markers",
                name=mix,
                marker={
                    "symbol": SYMBOLS[i],
                    "color": COLORS[i],
                    "size": 8,
                    "opacity": [0.85 if p.feasible else 0.25 for p in sel],
                },
                hovertext=[p.hover for p in sel],
                hoverinfo="text",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[p.ratio for p in d.front],
            y=[p.metric for p in d.front],
            name="Pareto front",
            mode="lines+markers+text",
            line={"shape": "hv", "color": "black", "width": 1.5},
            marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
            text=["" if p.trial == b.trial else f"#{p.trial}" for p in d.front],
            textposition=f"{side} left",
            hovertext=[p.hover for p in d.front],
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[b.ratio],
            y=[b.metric],
            name="baseline",
            mode="markers+text",
            text=["baseline"],
            textposition=f"{side} right",
            hovertext=[b.hover],
            hoverinfo="text",
            marker={
                "symbol": "star",
                "size": 18,
                "color": "gold",
                "line": {"color": "black", "width": 1},
            },
        )
    )
    fig.add_vline(x=b.ratio, line={"color": "#bbb", "dash": "dot", "width": 1})
    fig.add_hline(y=b.metric, line={"color": "#bbb", "dash": "dot", "width": 1})
    fig.update_layout(
        title=d.title,
        xaxis_title=LATENCY_LABEL,
        yaxis_title=d.ylabel,
        template="plotly_white",
        hovermode="closest",
    )
    fig.write_html(str(path), include_plotlyjs="cdn")
