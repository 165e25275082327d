"""Search efficiency of the samplers: hypervolume after 30 and 60 trials, several seeds each.

``python benchmarks/search_efficiency.py [--supernet DIR] [--supernet-steps 1500] [--seeds 5]
[--trials 30,60] [--samplers nsga2,tpe,gp,random] [--latency predicted|measured]
[--ref-metric 0] [--ref-latency 2.0] [--threads 1] [--out runs/bench]
[--task-override key=value ...] [--supernet-override train.KEY=VALUE ...] [--dry-run]``

On ``efficient_attn`` / ``mqar`` with ONE trained supernet (issue 5, section 3): for every
sampler and seed, an Optuna study in memory built from the search's own pieces
(``nas.study.make_sampler``, ``enqueue_baseline``, ``Scorer``, ``objective``: trial 0 is the
baseline, then the sampler's choices), run to the largest ``--trials``; the hypervolume of the
first N completed trials for every N in ``--trials``, against a fixed reference point
(``--ref-metric`` for the task metric, ``--ref-latency`` for the latency ratio to the baseline).

Latency: ``predicted`` (default) uses the per-operator lookup table of ``nas.latency``:
deterministic and fast, so every sampler sees the same objective and the comparison measures
the samplers, not timing noise. ``measured`` times each new arch against the baseline (the
SQLite cache makes repeats free) and is much slower. Scores are memoised per architecture
within a run (an evaluation is deterministic: eval mode, fixed validation batches), which
saves time and changes no value. ``--dry-run``: a tiny task and budgets, BENCHMARKS.md untouched.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig

# Optuna exposes hypervolume only inside its plots; this is the function they call.
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks._supernet_fixture import (  # noqa: E402
    DEFAULT_OUT,
    DRY_OUT,
    SUPERNET_STEPS,
    Forced,
    compose,
    log,
    obtain_supernet,
    run_main,
)
from benchmarks.common import command_line, header, write_section  # noqa: E402
from nas.latency import LatencyEstimator  # noqa: E402
from nas.study import Scorer, enqueue_baseline, make_sampler, objective, sampler_names  # noqa: E402
from nas.tasks import Task  # noqa: E402
from search_spaces import Arch, HeadSpec  # noqa: E402
from search_spaces.space import SearchSpace  # noqa: E402


@dataclass
class MemoScorer(Scorer):
    """``Scorer`` that evaluates each architecture once per run (see the module docstring)."""

    memo: dict[str, dict] = field(default_factory=dict, repr=False)

    def __call__(self, arch: Arch) -> dict:
        if arch.signature not in self.memo:
            self.memo[arch.signature] = super().__call__(arch)
        return self.memo[arch.signature]


def hypervolume(study: optuna.Study, n: int, ref: tuple[float, float], maximize: bool) -> float:
    """Hypervolume of the first ``n`` completed trials (objectives as minimised losses: the
    metric negated when maximised) against ``ref``; points not better than ``ref`` add none."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))[:n]
    sign = -1.0 if maximize else 1.0
    points = np.array([[sign * t.values[0], t.values[1]] for t in trials], dtype=float)
    reference = np.array([sign * ref[0], ref[1]], dtype=float)
    points = points[(points < reference).all(axis=1)] if len(points) else points
    return float(compute_hypervolume(points, reference)) if len(points) else 0.0


def slowest_ratio(space: SearchSpace, estimator: LatencyEstimator) -> float | None:
    """The largest predicted latency ratio of any arch of the space (the table is additive per
    layer, so the slowest arch is uniform: one width, maximal depth, one op variant throughout),
    or None without a table."""
    table, ref = estimator.table, estimator.reference
    if table is None:
        return None
    worst, base = 0.0, table.predict_ms(ref)
    mixers = [(o.name, v) for o in space.mixers for v in o.variants()]
    channels = [(o.name, v) for o in space.channels for v in o.variants()]
    for dim, (m, mv), (c, cv), norm in itertools.product(space.dims, mixers, channels, space.norms):
        forced = {
            "dim": dim,
            "depth": max(space.depths),
            "norm": norm.name,
            "mixer": m,
            **mv,
            "channel": c,
            **cv,
        }
        arch = space.sample(Forced(forced, random.Random(0)), head=ref.head)
        worst = max(worst, table.predict_ms(arch) / base)
    return worst


def run_study(
    scorer: Scorer, sampler_name: str, seed: int, n_trials: int, bar: tqdm
) -> optuna.Study:
    """One in-memory study as ``nas.search`` runs it: the sampler, the baseline enqueued first."""
    space, head = scorer.supernet.space, scorer.supernet.head_spec
    sampler = make_sampler(sampler_name, seed, n_trials)
    study = optuna.create_study(directions=[scorer.task.direction, "minimize"], sampler=sampler)
    enqueue_baseline(study, space.params_of(space.baseline(head)))
    study.optimize(objective(scorer), n_trials=n_trials, callbacks=[lambda s, t: bar.update(1)])
    return study


def parse_list(text: str, kind, name: str) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise ValueError(f"--{name} must not be empty")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="efficient_attn")
    p.add_argument("--supernet", default=None, help="a trained supernet directory to reuse")
    p.add_argument("--supernet-steps", type=int, default=SUPERNET_STEPS)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per sampler")
    p.add_argument("--trials", default="30,60", help="hypervolume after these many trials")
    p.add_argument("--samplers", default="nsga2,tpe,gp,random")
    p.add_argument("--latency", default="predicted", choices=["predicted", "measured"])
    p.add_argument("--val-batches", type=int, default=None, help="default: search.val_batches")
    p.add_argument("--ref-metric", type=float, default=0.0, help="reference point: metric")
    p.add_argument("--ref-latency", type=float, default=2.0, help="reference point: latency ratio")
    p.add_argument("--seed", type=int, default=0, help="the supernet's seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help=f"where the supernet is (default {DEFAULT_OUT})")
    p.add_argument("--task", default=None, help="a task name (default: the config's, charlm)")
    p.add_argument("--task-override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--supernet-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override of the supernet's config, e.g. train.lr=0.001",
    )
    p.add_argument("--dry-run", action="store_true", help="tiny budgets; BENCHMARKS.md untouched")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[int], list[str]]:
    """The checked arguments, the trial counts to score (sorted) and the samplers' names;
    ``--dry-run`` applies its tiny budgets here."""
    args = build_parser().parse_args(argv)
    checkpoints = sorted(set(parse_list(args.trials, int, "trials")))
    samplers = parse_list(args.samplers, str, "samplers")
    bad = [s for s in samplers if s not in sampler_names()]
    if bad:
        raise ValueError(f"--samplers: {bad[0]!r} is not one of {', '.join(sampler_names())}")
    if args.dry_run:
        args.supernet_steps, args.seeds, checkpoints = 4, 2, [3, 6]
    if min(checkpoints) < 1 or args.seeds < 1 or args.supernet_steps < 1:
        raise ValueError("--trials, --seeds and --supernet-steps must be positive")
    return args, checkpoints, samplers


def make_scorer(
    args: argparse.Namespace,
    cfg: DictConfig,
    space: SearchSpace,
    task: Task,
    head: HeadSpec,
    shape: tuple,
    val_batches: int | None,
) -> tuple[MemoScorer, dict, float | None]:
    """The scorer every study shares (one supernet, one latency estimator), the supernet's
    metadata and the slowest predicted latency ratio of the space."""
    out = Path(args.out or (DRY_OUT if args.dry_run else DEFAULT_OUT))
    supernet, meta = obtain_supernet(cfg, space, task, args.supernet, out)
    log(f"latency: {args.latency} at shape {shape} (a lookup table is built once if missing)")
    estimator = LatencyEstimator.for_space(
        space,
        shape,
        head=head,
        directory=cfg.latency.cache_dir,
        mode=args.latency,
        device=cfg.latency.device,
        threads=cfg.latency.threads,
        repeats=cfg.latency.repeats,
        min_run_time=cfg.latency.min_run_time,
    )
    worst = slowest_ratio(space, estimator)
    scorer = MemoScorer(supernet.eval(), task, estimator, val_batches)
    return scorer, meta, worst


def log_estimate(
    scorer: Scorer, space: SearchSpace, head: HeadSpec, n_studies: int, n_max: int
) -> None:
    """Times three fresh random archs and logs the estimated time of every study."""
    probe = [space.sample(random.Random(1000 + k), head=head) for k in range(3)]
    start = time.perf_counter()
    for arch in probe:  # not memoised: a fresh trial's cost
        Scorer.__call__(scorer, arch)
    per_trial = (time.perf_counter() - start) / len(probe)
    log(
        f"{n_studies} studies x {n_max} trials at ~{per_trial:.2f} s per scored arch: estimated "
        f"~{n_studies * n_max * per_trial / 60:.0f} min at most (memoised repeats are free; "
        f"the gp sampler adds its own fitting time, which grows with the trials)"
    )


def run_studies(
    scorer: Scorer,
    samplers: list[str],
    seeds: int,
    checkpoints: list[int],
    ref: tuple[float, float],
    maximize: bool,
) -> tuple[dict[str, dict[int, list[float]]], dict[str, list[float]]]:
    """Every sampler with seeds 0 .. ``seeds`` - 1: ``{sampler: {N: hypervolume per seed}}`` and
    ``{sampler: seconds per study}``."""
    n_max = max(checkpoints)
    runs = [(seed, name) for seed in range(seeds) for name in samplers]  # seed-major: ETA
    hv: dict[str, dict[int, list[float]]] = {s: {n: [] for n in checkpoints} for s in samplers}
    seconds: dict[str, list[float]] = {s: [] for s in samplers}
    bar = tqdm(total=len(runs) * n_max, desc="trials (all studies)", unit="trial")
    search_start = time.perf_counter()
    for i, (seed, name) in enumerate(runs):
        start = time.perf_counter()
        study = run_study(scorer, name, seed, n_max, bar)
        seconds[name].append(time.perf_counter() - start)
        for n in checkpoints:
            hv[name][n].append(hypervolume(study, n, ref, maximize))
        if (i + 1) % len(samplers) == 0 and i + 1 < len(runs):  # after each round of seeds
            rounds_left = (len(runs) - i - 1) / len(samplers)
            per_round = (time.perf_counter() - search_start) / ((i + 1) / len(samplers))
            log(f"seed {seed} done; estimated {rounds_left * per_round / 60:.1f} min left")
    bar.close()
    return hv, seconds


def measure(args: argparse.Namespace, checkpoints: list[int], samplers: list[str]) -> dict:
    """Every study run and scored; the hypervolumes, times and settings for ``render``."""
    cfg, space, task = compose(
        "search",
        args.space,
        args.task_override,
        task=args.task,
        steps=args.supernet_steps,
        seed=args.seed,
        dry_run=args.dry_run,
        threads=args.threads,
        extra=args.supernet_override,
    )
    maximize = task.direction == "maximize"
    head, shape = task.head(), tuple(cfg.latency.shape or task.latency_shape)
    val_batches = args.val_batches or cfg.search.val_batches
    load0, begin = os.getloadavg(), time.perf_counter()
    scorer, meta, worst = make_scorer(args, cfg, space, task, head, shape, val_batches)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_max, ref = max(checkpoints), (args.ref_metric, args.ref_latency)
    log_estimate(scorer, space, head, args.seeds * len(samplers), n_max)
    hv, seconds = run_studies(scorer, samplers, args.seeds, checkpoints, ref, maximize)
    total = time.perf_counter() - begin
    return dict(
        space=space.name,
        task=task.name,
        metric=task.metric_name,
        direction=task.direction,
        steps=meta.get("steps"),
        default_sampler=cfg.search.sampler,
        val_batches=val_batches,
        shape=shape,
        worst=worst,
        checkpoints=checkpoints,
        samplers=samplers,
        hv=hv,
        seconds=seconds,
        scored=len(scorer.memo),
        total=total,
        load=(load0, os.getloadavg()),
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def render_table(res: dict) -> str:
    """Hypervolume after each number of trials (mean ± std [min, max] over seeds) per sampler."""
    checkpoints, hv = res["checkpoints"], res["hv"]
    table = [
        "| sampler | "
        + " | ".join(f"HV@{n} mean ± std [min, max]" for n in checkpoints)
        + " | s per study |",
        "|---|" + "---:|" * (len(checkpoints) + 1),
    ]
    for name in res["samplers"]:
        cells = []
        for n in checkpoints:
            m, s = _mean_std(hv[name][n])
            cells.append(f"{m:.4f} ± {s:.4f} [{min(hv[name][n]):.4f}, {max(hv[name][n]):.4f}]")
        label = f"{name} (default)" if name == res["default_sampler"] else name
        table.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {statistics.mean(res['seconds'][name]):.1f} |"
        )
    return "\n".join(table)


def render_verdicts(res: dict, seeds: int) -> str:
    """The default sampler against random search after each number of trials."""
    default_sampler, samplers, hv = res["default_sampler"], res["samplers"], res["hv"]
    verdicts = []
    if default_sampler in samplers and "random" in samplers and default_sampler != "random":
        for n in res["checkpoints"]:
            (md, sd), (mr, sr) = _mean_std(hv[default_sampler][n]), _mean_std(hv["random"][n])
            spread = max(sd, sr)
            by = f"{(md - mr) / spread:+.1f} std" if spread > 0 else "no spread"
            word = "beats" if md > mr else "does NOT beat"
            verdicts.append(
                f"- after {n} trials: the default `{default_sampler}` {word} random "
                f"search: mean HV {md:.4f} vs {mr:.4f} (difference {md - mr:+.4f}, {by} "
                f"of the larger std); seeds where {default_sampler} > random: "
                f"{sum(a > b for a, b in zip(hv[default_sampler][n], hv['random'][n], strict=True))}/{seeds}"
            )
    return "\n".join(verdicts) or "(the default sampler or random search was not run)"


def render_protocol(res: dict, args: argparse.Namespace) -> str:
    """The paragraph on the space, the supernet, each study and the reference point."""
    n_max, metric, worst = max(res["checkpoints"]), res["metric"], res["worst"]
    latency_text = (
        "predicted from the per-operator lookup table (deterministic and fast: every sampler "
        "sees exactly the same objective, so the comparison measures the samplers, not timing "
        "noise)"
        if args.latency == "predicted"
        else "measured against the baseline, interleaved (SQLite cache: repeated archs free)"
    )
    worst_text = f"; the slowest arch of the space is predicted at {worst:.2f}x" if worst else ""
    load = " -> ".join("/".join(f"{x:.1f}" for x in la) for la in res["load"])
    return (
        f"Space `{res['space']}`, task `{res['task']}` (metric {metric}, {res['direction']}), "
        f"{args.threads} thread(s). One supernet for every study: {res['steps']} steps "
        f"({'loaded from ' + args.supernet if args.supernet else 'trained by the benchmarks'}). "
        f"Each study: in-memory Optuna storage, `nas.study.make_sampler(name, seed, {n_max})` "
        f"(NSGA-II population {max(4, n_max // 4)}), the baseline enqueued as trial 0, objective "
        f"`nas.study.objective` (validation {metric} with inherited weights on {res['val_batches']} "
        f"batches; latency ratio to the baseline at shape {list(res['shape'])}, {latency_text}). "
        f"Seeds 0..{args.seeds - 1} per sampler. Hypervolume of the first N completed trials with the "
        f"**reference point ({metric} = {args.ref_metric}, latency ratio = "
        f"{args.ref_latency})**{worst_text}; the largest possible HV is "
        f"{(1 - args.ref_metric) * args.ref_latency:.1f} for accuracy in [0, 1]. "
        f"With one seed every sampler starts from the same random trials (Optuna's startup "
        f"sampling), so early hypervolumes can coincide. {res['scored']} distinct archs scored. Whole run {res['total'] / 60:.1f} min; load average "
        f"(1/5/15 min) {load}."
    )


def render(res: dict, args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: protocol, hypervolume table, the default sampler vs random."""
    return "\n\n".join(
        [
            header(
                "Search efficiency of the samplers (benchmarks/search_efficiency.py)",
                command_line(),
            ),
            render_protocol(res, args),
            render_table(res),
            render_verdicts(res, args.seeds),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args, checkpoints, samplers = parse_args(argv)
    res = measure(args, checkpoints, samplers)
    body = render(res, args)
    print(body)
    if not args.dry_run:
        write_section("search_efficiency", body)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
