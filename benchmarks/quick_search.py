"""The README's first command, measured: the quick search end to end, wall time and its front.

``python benchmarks/quick_search.py [--space efficient_attn] [override ...]``

Runs ``python -m nas.search +space=SPACE`` with the shipped defaults (``preset=quick``) in a fresh
temporary run directory and latency cache, so nothing is reused, and reports the wall time of
each phase (supernet training, trials, test re-evaluation) against the 10-minute target, the
printed front, and whether a member beats the baseline on latency at equal or better test metric
(issue 5's "done when").

It also says how informative the trials were (issue 14): a trial is *at chance* when its
validation metric lies less than a quarter of the way from an untrained model's (the baseline
freshly initialised, scored the same way) to the best trial's; for each token-mixer type, how many
trials above chance use it and the best among those that use it in every layer; and whether a
front member without softmax in every layer beats the baseline on the test metric at <= 0.6x
its latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.common import command_line, header, write_section  # noqa: E402
from nas.report import ParetoMember, format_table  # noqa: E402
from nas.search import compose, run_search  # noqa: E402
from nas.study import completed  # noqa: E402
from nas.tasks import Task, get_task  # noqa: E402
from nas.train_arch import init_model  # noqa: E402
from search_spaces import Arch  # noqa: E402

TARGET_MIN = 10.0
TARGET_AT_CHANCE = 0.20  # fraction of trials
TARGET_LATENCY = 0.6  # a non-softmax member beating the baseline at <= this latency ratio


def untrained_metric(task: Task, arch: Arch, val_batches: int | None, seed: int = 0) -> float:
    """The validation metric of ``arch`` freshly initialised: where "chance" lies for the task."""
    data = task.datamodule()
    data.setup("fit")
    return task.evaluate(init_model(arch, seed), data.val_dataloader(), max_batches=val_batches)


def census(trials, untrained: float, direction: str) -> dict:
    """Trials at chance, and per mixer type: trials above chance using it, the best one using it
    in every layer."""
    values = [t.values[0] for t in trials]
    best = max(values) if direction == "maximize" else min(values)
    span = best - untrained

    def progress(v: float) -> float:  # 0 at the untrained model, 1 at the best trial
        return (v - untrained) / span if span else 0.0

    above = [t for t in trials if progress(t.values[0]) >= 0.25]
    types: dict[str, dict] = {}
    for t in trials:
        mixers = {layer.mixer.name for layer in Arch.from_dict(t.user_attrs["arch"]).layers}
        for m in mixers:
            row = types.setdefault(m, {"trials": 0, "above": 0, "pure_best": None})
            row["trials"] += 1
            row["above"] += t in above
            if mixers == {m} and (
                row["pure_best"] is None or progress(t.values[0]) > progress(row["pure_best"])
            ):
                row["pure_best"] = t.values[0]
    return {
        "n": len(trials),
        "at_chance": len(trials) - len(above),
        "best": best,
        "untrained": untrained,
        "types": dict(sorted(types.items())),
    }


def non_softmax_winner(front: list[ParetoMember]) -> ParetoMember | None:
    """The fastest member that beats the baseline at <= 0.6x latency without softmax in every
    layer."""
    ok = [
        m
        for m in front
        if m.beats_baseline
        and m.latency_ratio <= TARGET_LATENCY
        and any(layer.mixer.name != "softmax" for layer in m.arch.layers)
    ]
    return min(ok, key=lambda m: m.latency_ratio) if ok else None


def render_census(c: dict, metric: str) -> str:
    frac = c["at_chance"] / c["n"]
    lines = [
        f"Trials at chance (validation {metric} less than a quarter of the way from an untrained "
        f"model's {c['untrained']:.4f} to the best trial's {c['best']:.4f}): **{c['at_chance']} of "
        f"{c['n']} ({frac:.0%})**: {'met' if frac <= TARGET_AT_CHANCE else 'NOT met'} (target "
        f"<= {TARGET_AT_CHANCE:.0%}).",
        "",
        f"| token mixer | trials using it | of them above chance | best val {metric}, every layer this mixer |",
        "|---|---:|---:|---:|",
    ]
    for name, row in c["types"].items():
        pure = "-" if row["pure_best"] is None else f"{row['pure_best']:.4f}"
        lines.append(f"| {name} | {row['trials']} | {row['above']} | {pure} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="efficient_attn")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument(
        "--run-dir", default=None, help="keep the run here (a new folder; default: a temporary one)"
    )
    parser.add_argument("overrides", nargs="*", help="extra search overrides (key=value)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir or f"{tmp}/run")
        if run_dir.exists():
            sys.exit(f"error: --run-dir {run_dir} exists; the benchmark measures a fresh run")
        overrides = [
            f"+space={args.space}",
            f"run_dir={run_dir}",
            f"latency.cache_dir={tmp}/latency",
            *args.overrides,
        ]
        start = time.perf_counter()
        result = run_search(compose(overrides))
        minutes = (time.perf_counter() - start) / 60
        supernet_s = _supernet_seconds(run_dir / "supernet" / "supernet.json")
    cfg = compose(overrides)
    task = get_task(cfg.task)
    table = format_table(result.pareto, result.baseline, task.metric_name, task.direction)
    winners = [m for m in result.pareto if m.beats_baseline]
    chance = untrained_metric(task, result.baseline.arch, cfg.search.val_batches, cfg.seed)
    trials = census(completed(result.study), chance, task.direction)
    other = non_softmax_winner(result.pareto)
    verdict = (
        f"{'met' if minutes <= TARGET_MIN else 'NOT met'} (target <= {TARGET_MIN:.0f} min); "
        f"{len(winners)} Pareto member(s) beat the baseline"
    )
    beyond = (
        f"A member without softmax in every layer beats the baseline at <= {TARGET_LATENCY}x "
        + (
            f"latency: **met**, trial {other.trial} ({other.latency_ratio:.3f}x, test "
            f"{task.metric_name} {other.test_metric:.4f} vs {result.baseline.test_metric:.4f})."
            if other
            else "latency: **NOT met**."
        )
    )
    body = (
        header("The quick search end to end (benchmarks/quick_search.py)", command_line())
        + f"`python -m nas.search +space={args.space}` with the shipped quick preset "
        f"({cfg.train.max_steps} supernet steps, {cfg.train.teacher_steps} of them teacher "
        f"only; {cfg.search.n_trials} trials, sampler {cfg.search.sampler}, latency measured "
        f"at {list(cfg.latency.shape or task.latency_shape)} with {cfg.latency.threads} "
        f"thread(s)), fresh run directory and latency cache.\n\n"
        f"Wall time: {minutes:.1f} min (supernet training {supernet_s / 60:.1f} min): {verdict}.\n\n"
        f"```\n{table}\n```\n\n{beyond}\n\n{render_census(trials, task.metric_name)}\n"
    )
    print(body)
    if not args.no_write:
        write_section("quick_search", body)


def _supernet_seconds(meta: Path) -> float:
    return float(json.loads(meta.read_text()).get("train_seconds", 0.0)) if meta.is_file() else 0.0


if __name__ == "__main__":
    main()
