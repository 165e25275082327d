"""What a plan search shows: the front as a table (terminal and ``front.csv``), the baselines
beside it, the finalized members' fidelity after stage 2, and ``pareto.png``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import optuna

from common.atomic import atomic_path, atomic_write_text


def rows(
    study: optuna.Study,
    members: list[optuna.trial.FrozenTrial],
    finalized: dict[int, dict[str, Any]],
    fidelity_name: str,
) -> list[dict[str, Any]]:
    """One row per front member and per baseline: validation fidelity, latency, and (finalized)
    held-out fidelity after stage 2 and the report's measured speedup."""
    baselines = [
        t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline") and t.values
    ]
    on_front = {t.number for t in members}
    out = []
    for t in sorted(
        {t.number: t for t in [*members, *baselines]}.values(), key=lambda t: t.values[1]
    ):
        row = {
            "trial": t.number,
            "baseline": t.user_attrs.get("baseline", ""),
            "front": t.number in on_front,
            "plan": t.user_attrs["plan"],
            f"val_{fidelity_name}": t.values[0],
            "latency_x_host": t.values[1],
        }
        rep = finalized.get(t.number)
        if rep:  # held-out text after stage 2: cosine (encoders) or KL and perplexity ratio
            for name, fid in rep["fidelity"].items():
                if "mean_cosine" in fid:
                    row[name] = fid["mean_cosine"]
                else:
                    row[f"{name}_kl"], row[f"{name}_ppl_x"] = fid["kl"], fid["ppl_ratio"]
            if rep.get("latency"):
                row["speedup"] = rep["latency"][-1]["speedup"]
        out.append(row)
    return out


def table(rows_: list[dict[str, Any]]) -> str:
    if not rows_:
        return "(no finished trials)"
    keys = list(dict.fromkeys(k for r in rows_ for k in r))
    cells = [keys] + [[_fmt(r.get(k, "")) for k in keys] for r in rows_]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_csv(path: Path, rows_: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows_ for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows_)
    atomic_write_text(path, buf.getvalue())


def plot(
    path: Path, study: optuna.Study, members: list[optuna.trial.FrozenTrial], fidelity_name: str
) -> None:
    """Every finished trial (grey), the front (line, labelled by trial), baselines (named)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.get_trials(deepcopy=False) if t.values]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(
        [t.values[1] for t in done], [t.values[0] for t in done], s=12, c="0.7", label="trials"
    )
    ax.plot(
        [t.values[1] for t in members], [t.values[0] for t in members], "o-", c="C0", label="front"
    )
    for t in members:
        ax.annotate(
            str(t.number),
            (t.values[1], t.values[0]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    for t in done:
        if t.user_attrs.get("baseline"):
            ax.scatter([t.values[1]], [t.values[0]], marker="s", c="C3", s=30)
            ax.annotate(
                t.user_attrs["baseline"],
                (t.values[1], t.values[0]),
                fontsize=7,
                color="C3",
                xytext=(3, -9),
                textcoords="offset points",
            )
    ax.set_xlabel("latency / host (measured side by side)")
    ax.set_ylabel(f"validation {fidelity_name} to the host")
    plans = len({t.user_attrs.get("plan") for t in done})
    ax.set_title(f"{study.study_name}: {plans} plans scored ({len(done)} trials)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
