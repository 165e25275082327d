"""Ranking fidelity of the supernet: inherited accuracy vs accuracy trained from scratch.

``python benchmarks/ranking.py [--supernet DIR] [--supernet-steps 1500] [--standalone-steps 1500]
[--standalone-batch N]
[--archs-per-type 4] [--mixed 0] [--seed 0] [--threads 1] [--supernet-threads N] [--out runs/bench]
[--workers 2] [--task-override key=value ...] [--supernet-override train.KEY=VALUE ...]
[--finetune-steps 0] [--standalone-from CSV] [--section NAME] [--estimate] [--dry-run]``

On a space (``efficient_attn``) and the configured task (``charlm``; ``--task mqar`` for recall):

1. Trains the space's supernet (``supernet.train.train_supernet``, the composed
   ``conf/train_supernet.yaml`` with ``--supernet-steps``), or loads one (``--supernet DIR``).
2. Chooses ``--archs-per-type`` architectures per token-mixer type, every layer of an
   architecture using that type (the baseline is the first softmax one); width and depth are
   spread over the space's grid, channel mixer, norm and mixer hyperparameters drawn at random
   (deterministic under ``--seed``); ``--mixed N`` adds N uniformly sampled (mixed) archs.
3. For each: validation accuracy with inherited weights (``activate``, ``task.evaluate``; with
   ``--finetune-steps K`` after K steps of fine-tuning, as the search's ``search.finetune_steps``) and
   after training from scratch for ``--standalone-steps`` with batch ``--standalone-batch`` (default:
   the task's) (``nas.train_arch.train_from_scratch``, the same seed and data order for all), on
   the whole validation split.
4. Kendall τ between the two, overall and within each mixer type (so that "softmax beats
   linear" alone cannot make τ look good), with bootstrap 90% intervals (archs resampled;
   within types, resampled per type), and the cost ratio supernet seconds / stand-alone seconds.

``--standalone-from CSV`` takes the stand-alone results of a previous run's ``ranking.csv`` (e.g.
``benchmarks/results/ranking.csv``) for every arch trained there with the same budget, seed and
task, so that another supernet is compared in minutes instead of an hour.

Targets: τ ≥ 0.7 overall, ≥ 0.5 within a type (``ranking_ceiling.py`` sets the stricter ones
against the mean of two stand-alone seeds). ``--estimate`` prints the time estimate (from a
few timed training steps of every chosen arch) and exits; ``--dry-run`` runs tiny budgets on a
tiny task and does not write BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
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
from benchmarks.rank_stats import ranking_stats  # noqa: E402
from nas.tasks import Task  # noqa: E402
from nas.train_arch import init_model, train_from_scratch, train_model  # noqa: E402
from search_spaces import Arch, HeadSpec  # noqa: E402
from search_spaces.space import SearchSpace  # noqa: E402
from supernet.supernet import Supernet  # noqa: E402

TARGET_ALL, TARGET_TYPE = 0.7, 0.5
RESULTS_CSV = Path(__file__).resolve().parent / "results" / "ranking.csv"
SHORT = {"softmax": "S", "sqa": "Q", "linear": "L", "sliding_window": "W", "ssm": "M"}
HPARAM = {
    "heads": "h",
    "q_heads": "q",
    "kv_heads": "kv",
    "window": "w",
    "d_state": "n",
    "feature_map": "",
    "ratio": "",
}


def select_archs(
    space: SearchSpace, head: HeadSpec, per_type: int, mixed: int, seed: int
) -> list[tuple[str, Arch]]:
    """``(type, arch)`` pairs: ``per_type`` single-mixer archs for every mixer of the space (the
    baseline first among its mixer's), then ``mixed`` uniformly sampled ones; distinct."""
    rng = random.Random(seed)
    baseline = space.baseline(head)
    base_mixers = {layer.mixer.name for layer in baseline.layers}
    seen, out = set(), []
    for op in space.mixers:
        grid = list(itertools.product(space.dims, space.depths))  # spread width and depth
        rng.shuffle(grid)
        archs = [baseline] if base_mixers == {op.name} else []
        for i in itertools.count():
            if len(archs) >= per_type or i > 100 * per_type:
                break
            dim, depth = grid[i % len(grid)]
            arch = space.sample(
                Forced({"dim": dim, "depth": depth, "mixer": op.name}, rng), head=head
            )
            if arch.signature not in seen | {a.signature for a in archs}:
                archs.append(arch)
        seen |= {a.signature for a in archs}
        out += [(op.name, a) for a in archs[:per_type]]
    while mixed > 0:
        arch = space.sample(rng, head=head)
        if arch.signature not in seen:
            seen.add(arch.signature)
            out.append(("mixed", arch))
            mixed -= 1
    return out


def op_text(spec) -> str:
    params = "".join(f"{HPARAM.get(k, k)}{v}" for k, v in spec.params.items() if k != "rope_theta")
    return f"{SHORT.get(spec.name, spec.name)}{params}"


def describe(arch: Arch) -> str:
    """``d96 layernorm S(h4)/L(h2hedgehog) | mlp4/swiglu3``: width, norm, mixers and channels."""
    mixers = "/".join(op_text(layer.mixer) for layer in arch.layers)
    channels = "/".join(
        f"{layer.channel.name}{layer.channel.params.get('ratio', '')}" for layer in arch.layers
    )
    return f"d{arch.dim} {arch.layers[0].norm.name} {mixers} \\| {channels}"


# -- time estimate -----------------------------------------------------------------------------
def step_seconds(arch: Arch, task: Task, batch: dict, repeats: int = 2) -> float:
    """Seconds of one plain training step (forward, loss, backward, AdamW) of ``arch``."""
    model = init_model(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(repeats + 1):  # the first step allocates: not counted
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        task.loss(task.run_model(model, batch), batch).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def estimate(
    space, task, head, archs, supernet_steps, standalone_steps, standalone_batch, train
) -> tuple[float, list[float]]:
    """Estimated seconds of supernet training and of each stand-alone training: timed plain steps,
    +10% for Lightning; the supernet's step as the teacher alone for ``train.teacher_steps``, then
    teacher + smallest + random subnets (+ a teacher-sized one with ``train.mixer_teachers``),
    +20% for weight slicing and distillation (see benchmarks/supernet_step.py)."""
    data = task.datamodule()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    alone_batch = next(iter(task.datamodule(batch_size=standalone_batch).train_dataloader()))
    alone = [step_seconds(a, task, alone_batch) for _, a in archs]
    rng = random.Random(0)
    randoms = [step_seconds(space.sample(rng, head=head), task, batch) for _ in range(4)]
    teacher = step_seconds(space.teacher(head), task, batch)
    sandwich = teacher * (1 + bool(train.get("mixer_teachers"))) + step_seconds(
        space.smallest(head), task, batch
    )
    sandwich += train.num_random * float(np.mean(randoms))
    first = min(supernet_steps, train.teacher_steps)
    supernet = 1.2 * (first * teacher + (supernet_steps - first) * sandwich)
    return supernet, [1.1 * standalone_steps * t for t in alone]


# -- the benchmark -------------------------------------------------------------------------------
def inherited_accuracy(
    supernet: Supernet,
    task: Task,
    arch: Arch,
    val_batches: int | None,
    finetune_steps: int = 0,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """The validation metric of ``arch`` with the supernet's weights, as the search scores it:
    as inherited, or after ``finetune_steps`` steps of fine-tuning (``search.finetune_steps``)."""
    if finetune_steps:
        model = supernet.extract(arch)
        res = train_model(
            model,
            task,
            max_steps=finetune_steps,
            lr=lr,
            seed=seed,
            val_batches=val_batches,
            progress=False,
        )
        return float(res["val_metric"])
    data = task.datamodule()
    data.setup("fit")
    supernet.activate(arch)
    supernet.recalibrate(arch, itertools.islice(data.train_dataloader(), 4))
    return task.evaluate(supernet, data.val_dataloader(), max_batches=val_batches)


def train_job(job: dict) -> dict:
    """One stand-alone training (runs in a worker process): ``train_from_scratch`` results plus
    the parameter count."""
    torch.set_num_threads(job["threads"])
    steps = job["steps"]
    model, res = train_from_scratch(
        job["arch"],
        job["task"],
        seed=job["seed"],
        max_steps=steps,
        lr=job["lr"],
        batch_size=job["batch"],
        warmup_steps=max(1, steps // 20),
        val_batches=job["val_batches"],
        progress=False,
    )
    return {**res, "params": sum(p.numel() for p in model.parameters())}


@contextmanager
def _pool(workers: int):
    """Worker processes (spawned: no forked OpenMP or Lightning state), or this process."""
    if workers == 1:
        with ThreadPoolExecutor(1) as pool:  # one at a time, in this process
            yield pool
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


BUDGET_KEYS = (
    "standalone_steps",
    "standalone_batch",
    "standalone_lr",
    "seed",
    "val_batches",
    "task",
)


def budget_of(row: dict) -> dict:
    """``row`` (of a ranking CSV) with every ``BUDGET_KEYS`` entry; CSVs written before
    ``standalone_batch`` existed trained with the task's batch size."""
    if "standalone_batch" not in row and "task" in row:
        row = {**row, "standalone_batch": str(json.loads(row["task"])["batch_size"])}
    return row


def load_standalone(path: str, budget: dict[str, str]) -> dict[str, dict]:
    """``{signature: result}`` of the rows of a previous ``ranking.csv`` trained with ``budget``
    (every ``BUDGET_KEYS`` value equal, as text)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--standalone-from {path}: no such file")
    with file.open(newline="") as f:
        rows = [budget_of(r) for r in csv.DictReader(f)]
    if rows and not set(BUDGET_KEYS) <= set(rows[0]):
        raise ValueError(f"--standalone-from {path}: the file does not record the training budget")
    return {
        r["signature"]: {
            "val_metric": float(r["standalone"]),
            "seconds": float(r["standalone_seconds"]),
            "train_loss": float(r["train_loss"]),
            "params": int(r["params"]),
        }
        for r in rows
        if all(r[k] == budget[k] for k in BUDGET_KEYS)
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [
        "index",
        "type",
        "signature",
        "dim",
        "depth",
        "params",
        "inherited",
        "standalone",
        "standalone_seconds",
        "train_loss",
        *BUDGET_KEYS,
        "arch",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


# -- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="efficient_attn")
    p.add_argument("--supernet", default=None, help="a trained supernet directory to reuse")
    p.add_argument("--supernet-steps", type=int, default=SUPERNET_STEPS)
    p.add_argument("--standalone-steps", type=int, default=1500)
    p.add_argument(
        "--standalone-batch", type=int, default=None, help="default: the task's batch size"
    )
    p.add_argument("--standalone-lr", type=float, default=1e-3)
    p.add_argument("--archs-per-type", type=int, default=4)
    p.add_argument("--mixed", type=int, default=0, help="uniformly sampled mixed archs to add")
    p.add_argument("--val-batches", type=int, default=None, help="default: the whole val split")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--supernet-threads",
        type=int,
        default=None,
        help="torch threads for training the supernet, which runs before the "
        "stand-alone trainings (default: --threads)",
    )
    p.add_argument("--workers", type=int, default=2, help="stand-alone trainings run in parallel")
    p.add_argument("--out", default=None, help=f"supernet/ and ranking.csv (default {DEFAULT_OUT})")
    p.add_argument("--task", default=None, help="a task name (default: the config's, charlm)")
    p.add_argument("--task-override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--supernet-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override of the supernet's config, e.g. train.lr=0.001",
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="score subnets after this many fine-tuning steps (as search.finetune_steps)",
    )
    p.add_argument(
        "--standalone-from",
        default=None,
        metavar="CSV",
        help="reuse the stand-alone results of a previous ranking.csv",
    )
    p.add_argument(
        "--section",
        default=None,
        help="BENCHMARKS.md section and CSV name "
        "(default: ranking, or ranking_finetuned with --finetune-steps)",
    )
    p.add_argument("--estimate", action="store_true", help="print the time estimate and exit")
    p.add_argument("--dry-run", action="store_true", help="tiny budgets; BENCHMARKS.md untouched")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed and checked arguments (``--dry-run`` applies its tiny budgets here)."""
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args.supernet_steps, args.standalone_steps, args.bootstrap = 4, 3, 200
        args.archs_per_type = min(args.archs_per_type, 2)
    for name in (
        "supernet_steps",
        "standalone_steps",
        "archs_per_type",
        "bootstrap",
        "threads",
        "workers",
    ):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
            )
    if args.section is not None and not args.section.replace("_", "").isalnum():
        raise ValueError(f"--section must be letters, digits and _, got {args.section!r}")
    for name in ("supernet_threads", "standalone_batch"):  # optional
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
            )
    return args


# -- measuring -----------------------------------------------------------------------------------
def standalone_budget(args: argparse.Namespace, task: Task) -> dict[str, str]:
    """The ``BUDGET_KEYS`` of this run, as text (as the CSV stores them)."""
    return {
        "standalone_steps": str(args.standalone_steps),
        "standalone_batch": str(args.standalone_batch),
        "standalone_lr": str(args.standalone_lr),
        "seed": str(args.seed),
        "val_batches": str(args.val_batches),
        "task": json.dumps(task.to_config(), sort_keys=True),
    }


def time_estimate(
    args: argparse.Namespace,
    cfg: DictConfig,
    space: SearchSpace,
    task: Task,
    head: HeadSpec,
    archs: list[tuple[str, Arch]],
    results: dict[int, dict],
) -> tuple[list[float], float]:
    """Estimated seconds of each stand-alone training (0 where ``results`` has it already) and of
    the whole run, logged."""
    est_super, est_each = estimate(
        space,
        task,
        head,
        archs,
        0 if args.supernet else args.supernet_steps,
        args.standalone_steps,
        args.standalone_batch,
        cfg.train,
    )
    est_each = [0.0 if i in results else t for i, t in enumerate(est_each)]
    est_alone = sum(est_each) / min(args.workers, len(archs))  # wall time, one core per worker
    log(
        f"{len(archs)} archs; estimated time (machine as loaded now): supernet {est_super / 60:.1f} min, "
        f"stand-alone {est_alone / 60:.1f} min with {args.workers} worker(s), total {(est_super + est_alone) / 60:.1f} min"
    )
    return est_each, est_super + est_alone


def prepare(args: argparse.Namespace) -> dict:
    """The composed config, space and task, the chosen archs, the stand-alone results reused from
    ``--standalone-from`` and the time estimate (logged); everything ``measure`` starts from."""
    out = Path(args.out or (DRY_OUT if args.dry_run else DEFAULT_OUT))
    cfg, space, task = compose(
        "train_supernet",
        args.space,
        args.task_override,
        task=args.task,
        steps=args.supernet_steps,
        seed=args.seed,
        dry_run=args.dry_run,
        threads=args.threads,
        extra=args.supernet_override,
    )
    if space.loop is not None:
        raise ValueError(f"--space {space.name}: looped spaces are not supported here")
    head = task.head()
    args.standalone_batch = args.standalone_batch or task.batch_size
    archs = select_archs(space, head, args.archs_per_type, args.mixed, args.seed)
    load0, begin = os.getloadavg(), time.perf_counter()
    budget = standalone_budget(args, task)
    reused = load_standalone(args.standalone_from, budget) if args.standalone_from else {}
    results: dict[int, dict] = {
        i: reused[a.signature] for i, (_, a) in enumerate(archs) if a.signature in reused
    }
    if args.standalone_from:
        log(f"{len(results)} of {len(archs)} stand-alone results taken from {args.standalone_from}")
    est_each, estimated = time_estimate(args, cfg, space, task, head, archs, results)
    return dict(
        out=out,
        cfg=cfg,
        space=space,
        task=task,
        archs=archs,
        budget=budget,
        reused=reused,
        results=results,
        est_each=est_each,
        estimated=estimated,
        load0=load0,
        begin=begin,
    )


def train_standalone(
    args: argparse.Namespace,
    task: Task,
    archs: list[tuple[str, Arch]],
    inherited: list[float],
    results: dict[int, dict],
    est_each: list[float],
) -> float:
    """Trains every arch not yet in ``results`` (filled in place) from scratch in a process pool,
    logging the time left; returns the training seconds summed over all archs."""
    jobs = [
        dict(
            arch=a,
            task=task,
            seed=args.seed,
            steps=args.standalone_steps,
            batch=args.standalone_batch,
            lr=args.standalone_lr,
            val_batches=args.val_batches,
            threads=args.threads,
        )
        for _, a in archs
    ]
    spent, wall = sum(r["seconds"] for r in results.values()), time.perf_counter()
    bar = tqdm(
        total=len(archs),
        initial=len(results),
        unit="arch",
        desc=f"stand-alone training ({args.workers} worker(s))",
    )
    with _pool(args.workers) as pool:
        futures = {pool.submit(train_job, job): i for i, job in enumerate(jobs) if i not in results}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            spent += results[i]["seconds"]
            bar.update(1)
            bar.set_postfix(
                inherited=f"{inherited[i]:.3f}", alone=f"{results[i]['val_metric']:.3f}"
            )
            done = sum(est_each[j] for j in results)
            if len(results) < len(archs) and done > 0:  # what is left, scaled by the error
                eta = (sum(est_each) - done) * (time.perf_counter() - wall) / done
                log(f"  ETA ~{eta / 60:.1f} min for {len(archs) - len(results)} more archs")
    bar.close()
    return spent


def result_rows(
    archs: list[tuple[str, Arch]],
    inherited: list[float],
    results: dict[int, dict],
    budget: dict[str, str],
) -> list[dict]:
    """One row per arch: the rows of ``ranking.csv`` (plus ``describe``)."""
    rows = []
    for i, (kind, arch) in enumerate(archs):
        res = results[i]
        rows.append(
            dict(
                index=i,
                type=kind,
                signature=arch.signature,
                dim=arch.dim,
                depth=len(arch.layers),
                params=res["params"],
                inherited=inherited[i],
                standalone=res["val_metric"],
                standalone_seconds=res["seconds"],
                train_loss=res["train_loss"],
                arch=json.dumps(arch.to_dict()),
                **budget,
                describe=describe(arch),
            )
        )
    return rows


def measure(args: argparse.Namespace, setup: dict) -> dict:
    """Obtains the supernet, scores every arch with it, trains the rest stand-alone; the per-arch
    rows, their τ statistics and the run's settings and times, for ``render``."""
    cfg, space, task, archs = setup["cfg"], setup["space"], setup["task"], setup["archs"]
    torch.set_num_threads(args.supernet_threads or args.threads)
    supernet, meta = obtain_supernet(cfg, space, task, args.supernet, setup["out"])
    torch.set_num_threads(args.threads)
    supernet.eval()
    super_seconds = float(meta.get("train_seconds", float("nan")))
    scoring = time.perf_counter()
    inherited = [
        inherited_accuracy(
            supernet, task, a, args.val_batches, args.finetune_steps, args.standalone_lr, args.seed
        )
        for _, a in tqdm(archs, desc="supernet scores", unit="arch")
    ]
    scoring = time.perf_counter() - scoring  # evaluation (and fine-tuning) of every arch
    results = setup["results"]
    spent = train_standalone(args, task, archs, inherited, results, setup["est_each"])
    rows = result_rows(archs, inherited, results, setup["budget"])
    total = time.perf_counter() - setup["begin"]
    reused_archs = [a for _, a in archs if a.signature in setup["reused"]]
    stats = ranking_stats(rows, args.bootstrap, args.seed)
    tr = supernet_training(cfg, args.supernet)
    return dict(
        space=space.name,
        task=task.to_config(),
        metric=task.metric_name,
        meta=meta,
        train=dict(
            teacher_steps=tr.teacher_steps,
            num_random=tr.num_random,
            single_mixer_prob=tr.get("single_mixer_prob"),
            mixer_teachers=tr.get("mixer_teachers"),
            batch_size=tr.batch_size,
            lr=tr.lr,
        ),
        super_seconds=super_seconds,
        scoring=scoring,
        spent=spent,
        reused=len(reused_archs),
        rows=rows,
        stats=stats,
        total=total,
        estimated=setup["estimated"],
        load=(setup["load0"], os.getloadavg()),
    )


# -- rendering -----------------------------------------------------------------------------------
def render_protocol(res: dict, args: argparse.Namespace) -> str:
    """The paragraph on the space, the supernet, the stand-alone training and the run."""
    meta, tr = res["meta"], res["train"]
    if args.supernet:
        origin = "loaded from " + args.supernet
    elif meta.get("reused_from"):
        origin = "reused from " + meta["reused_from"] + ", trained with these settings"
    else:
        origin = "trained here"
    mix = tr["single_mixer_prob"]
    single = f" ({mix:.0%} of them with one token mixer in every layer)" if mix else ""
    teachers = " and each token mixer its own teacher in turn" if tr["mixer_teachers"] else ""
    at = (
        ""
        if args.supernet or meta.get("reused_from")
        else f" at {args.supernet_threads or args.threads} thread(s)"
    )
    score = (
        "inherited weights as they are"
        if not args.finetune_steps
        else f"inherited weights fine-tuned {args.finetune_steps} steps (as search.finetune_steps)"
    )
    taken = (
        f" ({res['reused']} results taken from " + args.standalone_from + ")"
        if res["reused"]
        else ""
    )
    val = "the whole" if args.val_batches is None else f"{args.val_batches} batches of the"
    mixed = f", plus {args.mixed} mixed" if args.mixed else ""
    load = " -> ".join("/".join(f"{x:.1f}" for x in la) for la in res["load"])
    return (
        f"Space `{res['space']}`, task `{json.dumps(res['task'])}`, {args.threads} thread(s). "
        f"Supernet: {meta.get('steps')} steps, seed {meta.get('seed')} ({origin}, "
        f"teacher alone for the first {tr['teacher_steps']}, then the sandwich rule with {tr['num_random']} random subnets"
        f"{single}{teachers}, batch {tr['batch_size']}, lr {tr['lr']}), "
        f"{res['super_seconds']:.0f} s{at}. Supernet score: {score}. Stand-alone: every arch trained from scratch for {args.standalone_steps} "
        f"steps (AdamW lr {args.standalone_lr}, warm-up {max(1, args.standalone_steps // 20)} steps, cosine, "
        f"batch {args.standalone_batch}, seed {args.seed}, the same data order; {args.workers} in parallel, {args.threads} thread(s) each), {res['spent']:.0f} s summed over archs"
        f"{taken}. "
        f"{res['metric']} on {val} "
        f"validation split. Archs: {args.archs_per_type} per mixer type, every layer that type (the baseline "
        f"among the softmax ones), width and depth spread over the grid, other choices random "
        f"(seed {args.seed}){mixed}. Bootstrap: "
        f"{args.bootstrap} resamples of the archs (per type for within-type τ), 5th-95th percentile. "
        f"Whole run {res['total'] / 60:.1f} min (estimated beforehand {res['estimated'] / 60:.1f}); "
        f"load average (1/5/15 min) {load}."
    )


def render_cost(res: dict, tuned: bool) -> str:
    """The cost ratio: supernet training (and fine-tuning) seconds / stand-alone seconds."""
    super_seconds, scoring, spent = res["super_seconds"], res["scoring"], res["spent"]
    ratio = (super_seconds + (scoring if tuned else 0.0)) / spent if spent else float("nan")
    return (
        f"**Cost ratio** supernet training{' + fine-tuning' if tuned else ''} / all stand-alone training: "
        f"{super_seconds:.0f} s{f' + {scoring:.0f} s' if tuned else ''} / "
        f"{spent:.0f} s = **{ratio:.2f}** (training seconds summed, not wall time; the supernet "
        f"scores every arch of the space for that)."
    )


def _ci(stats: dict, key: str) -> str:
    value, lo, hi, _ = stats[key]
    return f"{value:.3f} | [{lo:.3f}, {hi:.3f}]"


def render_summary(rows: list[dict], stats: dict) -> str:
    """The τ table: all archs, the mean within a mixer type, each type, against the targets."""
    types = [t for t in stats if t not in ("all", "within")]
    summary = [
        "| Kendall τ (inherited vs stand-alone) | τ | 90% CI | target | |",
        "|---|---:|---|---:|---|",
        f"| all {len(rows)} archs | {_ci(stats, 'all')} | ≥ {TARGET_ALL} | {verdict(stats['all'][0], TARGET_ALL)} |",
        f"| mean within a mixer type ({len(types)} types) | {_ci(stats, 'within')} | ≥ {TARGET_TYPE} | {verdict(stats['within'][0], TARGET_TYPE)} |",
    ]
    for t in types:
        n = sum(r["type"] == t for r in rows)
        summary.append(
            f"| within {t} ({n} archs) | {_ci(stats, t)} | ≥ {TARGET_TYPE} | {verdict(stats[t][0], TARGET_TYPE)} |"
        )
    return "\n".join(summary)


def render_detail(rows: list[dict]) -> str:
    """The per-architecture table, folded."""
    detail = [
        "| # | type | arch (width, norm, mixers \\| channels) | params | inherited | stand-alone | s |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        detail.append(
            f"| {r['index']} | {r['type']} | {r['describe']} | {r['params']:,} | "
            f"{r['inherited']:.4f} | {r['standalone']:.4f} | {r['standalone_seconds']:.1f} |"
        )
    return (
        "<details><summary>per architecture (S softmax, Q sqa, L linear, W sliding window, "
        "M ssm; h heads, q query heads, w window, n state size)</summary>\n\n"
        + "\n".join(detail)
        + "\n\n</details>"
    )


def render(res: dict, args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: protocol, cost ratio, τ table, per-arch table."""
    tuned = args.finetune_steps > 0
    title = (
        f"Supernet ranking fidelity{', fine-tuned scores' if tuned else ''}"
        f"{f' ({args.section})' if args.section else ''} (benchmarks/ranking.py)"
    )
    return "\n\n".join(
        [
            header(title, command_line()),
            render_protocol(res, args),
            render_cost(res, tuned),
            render_summary(res["rows"], res["stats"]),
            render_detail(res["rows"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = prepare(args)
    if args.estimate:
        return 0
    res = measure(args, setup)
    out = setup["out"]
    write_csv(out / "ranking.csv", res["rows"])
    body = render(res, args)
    print(body)
    if not args.dry_run:
        # inherited and fine-tuned scoring each keep their own section and CSV
        name = args.section or ("ranking" if args.finetune_steps <= 0 else "ranking_finetuned")
        csv_path = RESULTS_CSV.with_name(f"{name}.csv")
        write_section(name, body + f"\n\nPer-arch CSV: `benchmarks/results/{csv_path.name}`.")
        write_csv(csv_path, res["rows"])
    log(f"per-arch results in {out / 'ranking.csv'}")
    return 0


def supernet_training(cfg: DictConfig, supernet_dir: str | None) -> DictConfig:
    """The ``train`` settings the supernet was trained with: a loaded one's own ``config.yaml``
    (as ``python -m nas.train_supernet`` saves it), else the composed configuration."""
    saved = Path(supernet_dir or "") / "config.yaml"
    return OmegaConf.load(saved).train if supernet_dir and saved.is_file() else cfg.train


if __name__ == "__main__":
    sys.exit(run_main(main))
