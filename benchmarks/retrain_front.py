"""Fronts that survive retraining: a search's Pareto front vs random architectures, from scratch.

``python benchmarks/retrain_front.py [--run runs/efficient_attn-charlm] [--steps 250]
[--seeds 0 1] [--lr 0.003] [--sample-seed 0] [--latency-time 3.0] [--workers 2] [--threads 1]
[--out runs/bench-retrain] [--no-write] [--dry-run]``

How NAS results are judged (issue 14): once every model is trained from scratch, does the searched
front still beat the baseline, and random architectures of the same space at the same latencies?

1. Reads a finished ``python -m nas.search`` run directory: ``run.json`` (space, task),
   ``pareto.csv`` and ``pareto/trial_N/arch.yaml``. Members: the front without the baseline.
2. Draws random architectures of the space (``space.sample``, seeded) until there are as many as
   members whose latency ratio, predicted by the per-operator lookup table, lies in the members'
   predicted range (widened by 2% each side, so that a one-member front has a range).
3. Measures every member and random arch against the baseline, interleaved with it in one window
   (``nas.latency.cached_latency``, no cache), before any training, so all ratios compare.
4. Trains members, baseline and randoms from scratch once per seed (``train_from_scratch``: the
   seed sets initialisation and data order) in a process pool; scores the whole test split.
5. Targets: the best member at <= 0.7x latency beats the retrained baseline in every seed; the
   hypervolume of members + baseline exceeds that of randoms + baseline in every seed.

``--dry-run``: 3 steps, the first seed, at most 2 members and 2 randoms; BENCHMARKS.md untouched.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
# Optuna exposes hypervolume only inside its plots; this is the function they call.
from optuna._hypervolume import compute_hypervolume  # noqa: E402

from benchmarks._supernet_fixture import log, run_main  # noqa: E402
from benchmarks.common import command_line, header, write_section  # noqa: E402
from benchmarks.ranking import _pool, step_seconds  # noqa: E402
from common.atomic import atomic_path  # noqa: E402
from nas.latency import LatencyEstimator, cached_latency  # noqa: E402
from nas.report import describe  # noqa: E402
from nas.tasks import Task, get_task  # noqa: E402
from nas.train_arch import train_from_scratch  # noqa: E402
from search_spaces import Arch  # noqa: E402
from search_spaces.cli import UsageError  # noqa: E402
from search_spaces.space import SearchSpace, load_space  # noqa: E402

DEFAULT_RUN, DEFAULT_OUT = "runs/efficient_attn-charlm", "runs/bench-retrain"
# 30 trainings (7 members + baseline + 7 randoms, 2 seeds) on 2 workers in <= ~25 min: the
# baseline's Lightning step took 0.36-0.41 s at 1 thread on the shared 2-core machine (load 3)
DEFAULT_STEPS, DEFAULT_LR = 250, 3e-3  # lr: 3e-3 beat 1e-3 on the baseline at 150 steps
TARGET_RATIO, REF_RATIO, MARGIN, MAX_DRAWS = 0.7, 1.1, 0.02, 20_000
RESULTS_CSV = Path(__file__).resolve().parent / "results" / "retrain_front.csv"


def load_run(path: Path) -> dict:
    """Space, task, baseline, members (fastest first) and latency settings of a search run."""
    for name in ("run.json", "pareto.csv"):
        if not (path / name).is_file():
            raise UsageError(f"--run {path}: no {name} (not a finished `python -m nas.search` run)")
    info = json.loads((path / "run.json").read_text())
    data = info.get("identity", {}).get("space")  # the space as searched, even a user's file
    space = SearchSpace(data, source=str(path)) if data else load_space(info["space"])
    task = get_task(info["task"])
    baseline = space.baseline(task.head())
    with (path / "pareto.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    members = [
        dict(
            group="member",
            trial=int(r["trial"]),
            search_ratio=float(r["latency_ratio"]),
            arch=Arch.load(path / "pareto" / f"trial_{r['trial']}" / "arch.yaml"),
        )
        for r in rows
    ]
    members = [m for m in members if m["arch"].signature != baseline.signature]
    if not members:
        raise UsageError(f"--run {path}: the front has no member besides the baseline")
    cfg = path / "config.yaml"
    lat = OmegaConf.to_container(OmegaConf.load(cfg).latency) if cfg.is_file() else {}
    latency = {
        "shape": tuple(info.get("latency_shape") or task.latency_shape),
        **{
            k: lat.get(k, v)
            for k, v in dict(device="cpu", threads=1, cache_dir="runs/latency").items()
        },
    }
    return dict(space=space, task=task, baseline=baseline, members=members, latency=latency)


def match_randoms(
    space: SearchSpace,
    task: Task,
    baseline: Arch,
    table,
    n: int,
    taken: set[str],
    lo: float,
    hi: float,
    seed: int,
) -> tuple[list[dict], int]:
    """Up to ``n`` distinct random archs (not in ``taken``) with predicted ratio in [lo, hi]."""
    rng, ref_ms, out, draws = random.Random(seed), table.predict_ms(baseline), [], 0
    while len(out) < n and draws < MAX_DRAWS:
        arch, draws = space.sample(rng, head=task.head()), draws + 1
        ratio = table.predict_ms(arch) / ref_ms
        if lo <= ratio <= hi and arch.signature not in taken:
            taken.add(arch.signature)
            out.append(
                dict(
                    group="random", trial="", search_ratio=float("nan"), arch=arch, predicted=ratio
                )
            )
    return out, draws


def retrain_job(job: dict) -> dict:
    """One training from scratch (runs in a worker process): test metric, seconds, parameters."""
    torch.set_num_threads(job["threads"])
    task, steps = job["task"], job["steps"]
    model, res = train_from_scratch(
        job["arch"],
        task,
        seed=job["seed"],
        max_steps=steps,
        lr=job["lr"],
        warmup_steps=max(1, steps // 20),
        progress=False,
    )
    data = task.datamodule()
    data.setup("test")
    return {
        "test": task.evaluate(model, data.test_dataloader()),
        "seconds": res["seconds"],
        "params": sum(p.numel() for p in model.parameters()),
    }


def measure(
    run: Path,
    *,
    steps: int,
    seeds: list[int],
    lr: float,
    sample_seed: int,
    workers: int,
    threads: int,
    latency_time: float,
    max_members: int | None = None,
) -> dict:
    """Choose the randoms, measure every latency, retrain everything; the results for ``render``."""
    begin, load0 = time.perf_counter(), os.getloadavg()
    r = load_run(run)
    space, task, baseline, lat = r["space"], r["task"], r["baseline"], r["latency"]
    members = r["members"][:max_members]
    estimator = LatencyEstimator.for_space(
        space,
        lat["shape"],
        head=task.head(),
        mode="predicted",
        directory=lat["cache_dir"],
        device=lat["device"],
        threads=lat["threads"],
    )
    ref_ms = estimator.table.predict_ms(baseline)
    for m in members:
        m["predicted"] = estimator.table.predict_ms(m["arch"]) / ref_ms
    lo = min(m["predicted"] for m in members) * (1 - MARGIN)
    hi = max(m["predicted"] for m in members) * (1 + MARGIN)
    taken = {baseline.signature} | {m["arch"].signature for m in members}
    randoms, draws = match_randoms(
        space, task, baseline, estimator.table, len(members), taken, lo, hi, sample_seed
    )
    base = dict(
        group="baseline", trial="", search_ratio=1.0, arch=baseline, predicted=1.0, ratio=1.0
    )
    entries = [*members, base, *randoms]
    for e in tqdm([e for e in entries if e is not base], desc="latency vs baseline", unit="arch"):
        record, _ = cached_latency(
            e["arch"],
            baseline,
            lat["shape"],
            lat["device"],
            None,
            mode="measured",
            threads=lat["threads"],
            repeats=1 if latency_time < 1 else 15,
            min_run_time=latency_time,
        )
        e["ratio"] = record.ratio
    torch.set_num_threads(threads)
    data = task.datamodule()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    estimate = (
        sum(1.1 * steps * step_seconds(e["arch"], task, batch) for e in entries)
        * len(seeds)
        / workers
    )
    log(
        f"{len(entries)} archs x {len(seeds)} seed(s): about {estimate / 60:.1f} min of training "
        f"with {workers} worker(s) (machine as loaded now)"
    )
    jobs = {
        (i, s): dict(arch=e["arch"], task=task, seed=s, steps=steps, lr=lr, threads=threads)
        for i, e in enumerate(entries)
        for s in seeds
    }
    done: dict[tuple[int, int], dict] = {}
    with _pool(workers) as pool, tqdm(total=len(jobs), desc="retraining", unit="run") as bar:
        futures = {pool.submit(retrain_job, job): key for key, job in jobs.items()}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            bar.update(1)
    for i, e in enumerate(entries):
        e["tests"] = [done[i, s]["test"] for s in seeds]
        e["mean"] = float(np.mean(e["tests"]))
        e["seconds"] = sum(done[i, s]["seconds"] for s in seeds)
        e["params"] = done[i, seeds[0]]["params"]
        e["describe"] = describe(e["arch"])
    return dict(
        run=str(run),
        space=space.name,
        task=task.to_config(),
        metric=task.metric_name,
        direction=task.direction,
        vocab=task.head().vocab_size,
        steps=steps,
        lr=lr,
        seeds=seeds,
        sample_seed=sample_seed,
        draws=draws,
        range=(lo, hi),
        latency=lat,
        latency_time=latency_time,
        workers=workers,
        threads=threads,
        entries=entries,
        estimate=estimate,
        minutes=(time.perf_counter() - begin) / 60,
        load=(load0, os.getloadavg()),
    )


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Hypervolume of (loss, latency ratio) points, both minimised; points not below ``ref``
    add none."""
    pts = np.array([p for p in points if p[0] < ref[0] and p[1] < ref[1]], dtype=float)
    return float(compute_hypervolume(pts, np.array(ref, dtype=float))) if len(pts) else 0.0


def summarize(res: dict) -> dict:
    """Best member vs baseline, hypervolumes (mean over seeds, and per seed) and the limit."""
    sign = 1.0 if res["direction"] == "minimize" else -1.0  # losses: metric, negated if maximised
    entries = res["entries"]
    groups = {g: [e for e in entries if e["group"] == g] for g in ("member", "baseline", "random")}
    base = groups["baseline"][0]
    fast = [m for m in groups["member"] if m["ratio"] <= TARGET_RATIO]
    best = min(fast, key=lambda m: sign * m["mean"]) if fast else None
    wins = (
        [sign * (t - b) < 0 for t, b in zip(best["tests"], base["tests"], strict=True)]
        if best
        else []
    )
    worst = max(sign * t for e in entries for t in e["tests"])
    ref = (
        worst + 0.05 * max(abs(worst), 1e-6),
        max(REF_RATIO, 1.05 * max(e["ratio"] for e in entries)),
    )
    sets = {"front": groups["member"] + [base], "random": groups["random"] + [base]}
    hv = {
        k: [
            hypervolume([(sign * e["tests"][i], e["ratio"]) for e in v], ref)
            for i in range(len(res["seeds"]))
        ]
        for k, v in sets.items()
    }
    hv_mean = {
        k: hypervolume([(sign * e["mean"], e["ratio"]) for e in v], ref) for k, v in sets.items()
    }
    limit = None
    if res["metric"] == "bpc":
        limit = (f"uniform guess log2({res['vocab']})", math.log2(res["vocab"]))
    elif res["metric"] == "accuracy" and res["vocab"]:
        limit = (f"chance 1/{res['vocab']}", 1 / res["vocab"])
    return dict(
        groups=groups,
        base=base,
        best=best,
        wins=wins,
        ref=ref,
        hv=hv,
        hv_mean=hv_mean,
        limit=limit,
        sign=sign,
    )


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def render(res: dict) -> str:
    """The BENCHMARKS.md section: protocol, targets, distances to the limit, per-arch table."""
    s, metric, seeds = summarize(res), res["metric"], res["seeds"]
    base, best, (lo, hi), lat = s["base"], s["best"], res["range"], res["latency"]
    n_mem, n_rand = len(s["groups"]["member"]), len(s["groups"]["random"])
    per_seed = lambda e: ", ".join(f"{t:.4f}" for t in e["tests"])  # noqa: E731
    load = " -> ".join("/".join(f"{x:.1f}" for x in la) for la in res["load"])
    batch = res["task"].get("batch_size", "of the task")
    fewer = " (all the range held)" if n_rand < n_mem else ""
    protocol = (
        f"Search run `{res['run']}` (space `{res['space']}`, task `{json.dumps(res['task'])}`, "
        f"metric {metric}, {res['direction']}). {n_mem} Pareto members (the baseline excluded), the "
        f"baseline, and {n_rand} random archs of the same space (`space.sample`, seed "
        f"{res['sample_seed']}, {res['draws']} draws{fewer}) kept when their latency ratio predicted by the "
        f"lookup table fell in the members' predicted range [{lo:.3f}, {hi:.3f}] (±{MARGIN:.0%}). "
        f"Latency: each arch measured against the baseline in one interleaved window (≥ "
        f"{res['latency_time']} s) at shape {list(lat['shape'])}, {lat['device']}, "
        f"{lat['threads']} thread(s), before training; ratio 1.0 is the baseline. Every arch "
        f"trained from scratch for {res['steps']} steps (AdamW lr {res['lr']}, warm-up "
        f"{max(1, res['steps'] // 20)} steps, cosine, batch {batch}) per seed {seeds} (the seed sets "
        f"initialisation and data order), {res['workers']} in parallel at {res['threads']} "
        f"thread(s); {metric} on the whole test split. Hypervolume in ({metric}, latency ratio), "
        f"both minimised{' (the metric negated)' if s['sign'] < 0 else ''}, **reference point "
        f"({s['sign'] * s['ref'][0]:.4f}, {s['ref'][1]:.3f})**: the worst {metric} of any arch and "
        f"seed made 5% worse, latency max({REF_RATIO}, 1.05 x the slowest); both sets contain the "
        f"baseline. Whole run {res['minutes']:.1f} min (training estimated beforehand "
        f"{res['estimate'] / 60:.1f}); load average {load}."
    )
    lines = []
    if best:
        lines.append(
            f"- Best member at ≤ {TARGET_RATIO}x latency: trial {best['trial']} ({best['describe']}), "
            f"{best['ratio']:.3f}x, {metric} per seed {per_seed(best)} vs baseline {per_seed(base)}: "
            f"better in every seed {verdict(bool(s['wins']) and all(s['wins']))}"
        )
    else:
        lines.append(
            f"- No member at ≤ {TARGET_RATIO}x latency after re-measuring: {verdict(False)}"
        )
    hv, hm = s["hv"], s["hv_mean"]
    if len(seeds) > 1:
        lines.append(
            f"- Hypervolume of the mean over seeds: front {hm['front']:.4f} vs random {hm['random']:.4f}"
        )
    for i, seed in enumerate(seeds):
        lines.append(
            f"- Hypervolume seed {seed}: front {hv['front'][i]:.4f} vs random "
            f"{hv['random'][i]:.4f}: front > random {verdict(hv['front'][i] > hv['random'][i])}"
        )
    if s["limit"]:
        name, value = s["limit"]
        picks = {
            "baseline": base,
            f"best member at ≤ {TARGET_RATIO}x": best,
            **{
                f"best {g}": min(s["groups"][g], key=lambda e: s["sign"] * e["mean"])
                for g in ("member", "random")
                if s["groups"][g]
            },
        }
        shown = {id(e): k for k, e in reversed(picks.items()) if e}  # an arch once, first name
        gaps = "; ".join(
            f"{k} {e['mean']:.4f} ({abs(e['mean'] - value):.4f} from it)"
            for k, e in picks.items()
            if e and shown[id(e)] == k
        )
        lines.append(f"- Distance to the {name} = {value:.4f} {metric}: {gaps}.")
    cols = " | ".join(f"seed {x}" for x in seeds)
    table = [
        f"| group | trial | arch | params | search ratio | ratio | {cols} | mean |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * (len(seeds) + 1),
    ]
    for e in res["entries"]:
        sr = "" if math.isnan(e["search_ratio"]) else f"{e['search_ratio']:.3f}"
        table.append(
            f"| {e['group']} | {e['trial']} | {e['describe']} | {e['params']:,} | {sr} | "
            f"{e['ratio']:.3f} | {' | '.join(f'{t:.4f}' for t in e['tests'])} | {e['mean']:.4f} |"
        )
    title = "Retrained front vs random architectures (benchmarks/retrain_front.py)"
    return "\n\n".join(
        [header(title, command_line()), protocol, "\n".join(lines), "\n".join(table)]
    )


def write_csv(path: Path, res: dict) -> None:
    """One row per arch (atomically: a failed run leaves an earlier file as it was)."""
    rows = [
        {
            "group": e["group"],
            "trial": e["trial"],
            "arch": e["describe"],
            "signature": e["arch"].signature,
            "params": e["params"],
            "search_ratio": e["search_ratio"],
            "predicted_ratio": e["predicted"],
            "latency_ratio": e["ratio"],
            **{f"test_seed{x}": t for x, t in zip(res["seeds"], e["tests"], strict=True)},
            "mean": e["mean"],
            "seconds": e["seconds"],
        }
        for e in res["entries"]
    ]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=DEFAULT_RUN, help="a finished nas.search run directory")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the random architectures")
    p.add_argument("--latency-time", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--workers", type=int, default=2, help="trainings run in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--out", default=None, help=f"for retrain_front.csv (default {DEFAULT_OUT})")
    p.add_argument("--no-write", action="store_true", help="BENCHMARKS.md, results/ untouched")
    p.add_argument("--dry-run", action="store_true", help="tiny budgets; BENCHMARKS.md untouched")
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps, args.seeds, args.latency_time = 3, args.seeds[:1], 0.01
    for name in ("steps", "workers", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds must be distinct, got {args.seeds}")
    res = measure(
        Path(args.run),
        steps=args.steps,
        seeds=args.seeds,
        lr=args.lr,
        sample_seed=args.sample_seed,
        workers=args.workers,
        threads=args.threads,
        latency_time=args.latency_time,
        max_members=2 if args.dry_run else None,
    )
    body = render(res)
    print(body)
    out = Path(args.out or DEFAULT_OUT) / "retrain_front.csv"
    write_csv(out, res)
    if not (args.dry_run or args.no_write):
        write_csv(RESULTS_CSV, res)
        write_section(
            "retrain_front", body + f"\n\nPer-arch CSV: `benchmarks/results/{RESULTS_CSV.name}`."
        )
    log(f"per-arch results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
