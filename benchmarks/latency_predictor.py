"""Latency predictor vs measurement on random architectures of a space.

``python benchmarks/latency_predictor.py [--space efficient_attn] [--n 50] [--length 2048]
[--threads 1] [--repeats 15] [--window 3.0] [--table-rounds 25] [--clock wall|cpu]
[--cv-archs 5] [--cv-repeats 5] [--no-write]``

1. Builds the space's per-operator lookup table on this machine (fresh, not from a cache).
2. Measures ``--n`` random architectures (``space.sample(random.Random(i))``), each interleaved
   with the space's baseline in alternating rounds (``measure_relative``: at least ``--repeats``
   rounds and ``--window`` seconds; exactly what ``cached_latency`` stores), and predicts each
   from the table (``predicted_record``).
3. Reports Kendall τ between predicted and measured ratios to the baseline, the median absolute
   relative error (MdAPE) of the predicted ratio and of the predicted absolute time, and the
   run-to-run coefficient of variation of ``--cv-repeats`` repeated measurements of
   ``--cv-archs`` architectures (absolute ms and ratio; repetitions interleaved across archs).

Targets (issue 4): τ ≥ 0.9, MdAPE ≤ 10%, CV of the ratio ≤ 5%. The default is one thread: on a
shared 2-core machine two OpenMP threads stall whenever another process takes a core (measured
here: 45 ms with one thread, 0.4-1.1 s with two, for the same model).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.common import command_line, header, write_section  # noqa: E402
from nas.latency import (  # noqa: E402
    LatencyTable,
    build_table,
    device_fingerprint,
    measure_relative,
    predicted_record,
)
from search_spaces import Arch  # noqa: E402
from search_spaces.space import SearchSpace, load_space  # noqa: E402

SHORT = {"softmax": "S", "sqa": "Q", "linear": "L", "sliding_window": "W", "ssm": "M"}


def describe(arch: Arch) -> str:
    """``d96 S/L/W``: width and the mixer of each layer (S softmax, Q sqa, L linear, W sliding
    window, M ssm)."""
    return f"d{arch.dim} " + "/".join(SHORT.get(x.mixer.name, x.mixer.name) for x in arch.layers)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values)


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "NOT met"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="efficient_attn")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=15, help="min alternating rounds per measurement"
    )
    parser.add_argument("--window", type=float, default=3.0, help="min seconds per measurement")
    parser.add_argument("--table-rounds", type=int, default=25)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--cv-archs", type=int, default=5)
    parser.add_argument("--cv-repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    return parser


def measure_archs(
    space: SearchSpace,
    reference: Arch,
    table: LatencyTable,
    shape: tuple,
    device: str,
    key: str,
    args: argparse.Namespace,
    opts: dict,
) -> list[dict]:
    """``--n`` random archs, each measured against ``reference`` and predicted from ``table``."""
    rows = []
    for i in range(args.n):
        arch = space.sample(random.Random(i))
        rel = measure_relative(arch, reference, shape, device, args.repeats, **opts)
        pred = predicted_record(table, arch, reference, shape, key)
        rows.append(
            dict(
                seed=i,
                arch=arch,
                ms=rel.candidate.median_ms,
                ratio=rel.ratio,
                ref_ms=rel.reference.median_ms,
                pred_ms=pred.ms,
                pred_ratio=pred.ratio,
            )
        )
        log(
            f"arch {i + 1}/{args.n} {describe(arch)}: measured {rel.ratio:.3f}, predicted {pred.ratio:.3f}"
        )
    return rows


def measure_repeats(
    rows: list[dict],
    reference: Arch,
    shape: tuple,
    device: str,
    args: argparse.Namespace,
    opts: dict,
) -> tuple[list[float], list[float]]:
    """Run-to-run CV (absolute ms, ratio) of the first ``--cv-archs`` archs over ``--cv-repeats``
    measurements, interleaved across the archs."""
    repeated: dict[int, list[tuple[float, float]]] = {r["seed"]: [] for r in rows[: args.cv_archs]}
    for rep in range(args.cv_repeats):
        for row in rows[: args.cv_archs]:
            rel = measure_relative(row["arch"], reference, shape, device, args.repeats, **opts)
            repeated[row["seed"]].append((rel.candidate.median_ms, rel.ratio))
        log(f"repeat {rep + 1}/{args.cv_repeats} done")
    cv_ms = [cv([ms for ms, _ in v]) for v in repeated.values()]
    cv_ratio = [cv([ratio for _, ratio in v]) for v in repeated.values()]
    return cv_ms, cv_ratio


def measure(args: argparse.Namespace) -> dict:
    """Builds the table, measures and predicts the archs, repeats some; results for ``render``."""
    space = load_space(args.space)
    reference, shape, device = space.baseline(), (1, args.length), "cpu"
    fp = device_fingerprint(device, args.threads, args.clock)
    opts = dict(threads=args.threads, min_run_time=args.window, clock=args.clock)
    load_start = os.getloadavg()
    begin = time.perf_counter()
    table = build_table(
        space,
        shape,
        device,
        threads=args.threads,
        rounds=args.table_rounds,
        clock=args.clock,
        progress=log,
    )
    log(f"table: {len(table.entries)} entries in {table.build_seconds:.0f} s")
    rows = measure_archs(space, reference, table, shape, device, fp.key, args, opts)
    measure_seconds = time.perf_counter() - begin - table.build_seconds
    cv_ms, cv_ratio = measure_repeats(rows, reference, shape, device, args, opts)
    total = time.perf_counter() - begin
    return dict(
        shape=shape,
        fingerprint=fp.key,
        reference=reference.signature,
        reference_ms=table.predict_ms(reference),
        entries=len(table.entries),
        build_seconds=table.build_seconds,
        measure_seconds=measure_seconds,
        total=total,
        load=(load_start, os.getloadavg()),
        rows=rows,
        cv_ms=cv_ms,
        cv_ratio=cv_ratio,
    )


def render_summary(res: dict, args: argparse.Namespace, ape_ratio: list[float]) -> str:
    """The targets: τ, MdAPE, run-to-run CV, and the baseline's spread across windows."""
    rows, cv_ms, cv_ratio = res["rows"], res["cv_ms"], res["cv_ratio"]
    tau = kendalltau([r["pred_ratio"] for r in rows], [r["ratio"] for r in rows]).statistic
    ape_ms = [abs(r["pred_ms"] - r["ms"]) / r["ms"] for r in rows]
    ref_ms = [r["ref_ms"] for r in rows]
    summary = [
        "| metric | value | target | |",
        "|---|---:|---:|---|",
        f"| Kendall τ (predicted vs measured ratio), {args.n} archs | {tau:.3f} | ≥ 0.9 | {verdict(tau, 0.9, True)} |",
        f"| MdAPE of predicted ratio | {statistics.median(ape_ratio):.1%} | ≤ 10% | {verdict(statistics.median(ape_ratio), 0.10, False)} |",
        f"| MdAPE of predicted absolute ms | {statistics.median(ape_ms):.1%} | | |",
        f"| run-to-run CV of the ratio, median (max) over {args.cv_archs} archs × {args.cv_repeats} | {statistics.median(cv_ratio):.1%} ({max(cv_ratio):.1%}) | ≤ 5% | {verdict(statistics.median(cv_ratio), 0.05, False)} |",
        f"| run-to-run CV of absolute ms, median (max) | {statistics.median(cv_ms):.1%} ({max(cv_ms):.1%}) | | |",
        f"| baseline ms across the {args.n} windows: min / median / max | {min(ref_ms):.1f} / {statistics.median(ref_ms):.1f} / {max(ref_ms):.1f} | | |",
    ]
    return "\n".join(summary)


def render_detail(rows: list[dict], ape_ratio: list[float]) -> str:
    """The per-architecture table, folded."""
    detail = [
        "| seed | arch | measured ms | measured ratio | predicted ms | predicted ratio | error |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r, err in zip(rows, ape_ratio, strict=True):
        detail.append(
            f"| {r['seed']} | {describe(r['arch'])} | {r['ms']:.1f} | {r['ratio']:.3f} "
            f"| {r['pred_ms']:.1f} | {r['pred_ratio']:.3f} | {err:.1%} |"
        )
    return (
        "<details><summary>per architecture (arch: width and mixer per layer: S softmax, "
        "Q sqa, L linear, W sliding window, M ssm)</summary>\n\n"
        + "\n".join(detail)
        + "\n\n</details>"
    )


def render(res: dict, args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: protocol, targets, per-arch table."""
    ape_ratio = [abs(r["pred_ratio"] - r["ratio"]) / r["ratio"] for r in res["rows"]]
    load_start, load_end = res["load"]
    protocol = (
        f"Space `{args.space}`, latency shape {res['shape']}, CPU, {args.threads} thread(s), {args.clock} clock "
        f"(fingerprint `{res['fingerprint']}`), float32, inference mode. Reference: the space's baseline "
        f"(`{res['reference']}`, predicted {res['reference_ms']:.1f} ms). Each "
        f"measurement: alternating rounds candidate/baseline (one block of calls each, "
        f"≥ {args.repeats} rounds and ≥ {args.window} s); ratio = median per-round ratio. "
        f"Lookup table: {res['entries']} entries, {args.table_rounds} interleaved rounds, "
        f"built in {res['build_seconds']:.0f} s; measurements "
        f"{res['measure_seconds']:.0f} s; whole run {res['total'] / 60:.1f} min. The machine is shared "
        f"with other jobs (numbers drift; ratios are what compare): load average (1, 5, 15 "
        f"min) {_load(load_start)} at the start, {_load(load_end)} at the end."
    )
    return "\n\n".join(
        [
            header(
                "Latency predictor vs measurement (benchmarks/latency_predictor.py)", command_line()
            ),
            protocol,
            render_summary(res, args, ape_ratio),
            render_detail(res["rows"], ape_ratio),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = measure(args)
    body = render(res, args)
    print(body)
    if not args.no_write:
        write_section("latency_predictor", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
