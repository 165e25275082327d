"""Forward latency, FLOPs and peak memory of every token mixer at growing length.

``python benchmarks/ops.py [--lengths 512 2048 8192] [--repeats 5] [--threads N] [--no-write]``

B=1, D=256, 4 heads of 64, causal, float32, inference mode. Each operator is timed with
``torch.utils.benchmark`` in ``--repeats`` rounds; within a round the operators are timed one
after the other (interleaved), so slow drifts of this shared machine hit all of them alike; the
table reports the median over rounds and the speed-up against ``softmax`` measured in the same
rounds. FLOPs come from each operator's analytic ``flops()``; where PyTorch's FLOP counter can
count the operator, the ratio counter / formula is shown as a check (for attention computed by
scaled_dot_product_attention, which the counter sees as 0 FLOPs on CPU, the formula's
remaining part is compared; the attention part is checked against a naive reference in tests). Peak memory is the profiler's peak of extra allocations.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.common import command_line, header, peak_memory_bytes, write_section  # noqa: E402
from search_spaces import create_op, list_ops  # noqa: E402

DIM, HEADS, HEAD_DIM = 256, 4, 64
MIXERS: dict[str, dict] = {
    "softmax": {"heads": HEADS, "head_dim": HEAD_DIM},
    "sqa": {"heads": HEADS, "q_heads": 2, "kv_heads": 2, "head_dim": HEAD_DIM},
    "linear": {"heads": HEADS, "head_dim": HEAD_DIM, "feature_map": "elu1"},
    "sliding_window": {"heads": HEADS, "head_dim": HEAD_DIM, "window": 512},
    "swa_linear": {  # as the shipped hybrid plans use it (conf/graft/hybrid_swa_linear_50.yaml)
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "window": 128,
        "block_size": 32,
        "feature_map": "hedgehog",
    },
    "ssm": {"heads": HEADS},
    "pooling": {"pool_size": 3},
    "gated_conv": {},
    "glu_mixer": {},  # max_len is set to the benchmarked length
    "identity": {},
}
# speed-up over softmax at 8192 (sliding_window and swa_linear: issue 16, at 1 and 2 threads)
TARGETS = {"sqa": 1.8, "linear": 4.0, "sliding_window": 4.0, "swa_linear": 4.0}


def build(name: str, length: int) -> torch.nn.Module:
    torch.manual_seed(0)
    hparams = dict(MIXERS[name])
    if name == "glu_mixer":
        hparams["max_len"] = length
    return create_op(name, DIM, causal=True, **hparams).eval()


def counted_flops(op: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        op(x)
    return counter.get_total_flops()


def time_round(ops: dict[str, torch.nn.Module], x: torch.Tensor, numbers: dict[str, int]) -> dict:
    out = {}
    for name, op in ops.items():
        timer = benchmark.Timer(
            stmt="with torch.inference_mode(): op(x)",
            globals={"op": op, "x": x, "torch": torch},
            num_threads=torch.get_num_threads(),
        )
        out[name] = timer.timeit(numbers[name]).median
    return out


def bench_length(length: int, repeats: int) -> list[dict]:
    x = torch.randn(1, length, DIM)
    ops = {name: build(name, length) for name in MIXERS}
    numbers = {}
    for name, op in ops.items():  # calibrate: about 0.2 s of work per measurement
        first = benchmark.Timer("op(x)", globals={"op": op, "x": x}).timeit(1).median
        numbers[name] = max(1, math.ceil(0.2 / max(first, 1e-6)))
    rounds = []
    for r in range(repeats):
        rounds.append(time_round(ops, x, numbers))
        print(f"  L={length}: round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    rows = []
    for name, op in ops.items():
        median = statistics.median(rd[name] for rd in rounds)
        speedup = statistics.median(rd["softmax"] / rd[name] for rd in rounds)
        formula = op.flops(length)
        visible = op.counted_flops(length)  # the part of the formula the counter sees
        counted = counted_flops(op, x) if length <= 2048 else None
        with torch.inference_mode():
            peak = peak_memory_bytes(lambda op=op: op(x))
        rows.append(
            dict(
                op=name,
                L=length,
                ms=median * 1e3,
                speedup=speedup,
                gflops=formula / 1e9,
                check=(counted / visible) if counted and visible else None,
                peak_mb=peak / 2**20,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| operator | L | median ms | speed-up vs softmax | GFLOPs (formula) | counter / formula | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        check = f"{r['check']:.3f}" if r["check"] is not None else "n/a"
        lines.append(
            f"| {r['op']} | {r['L']} | {r['ms']:.2f} | {r['speedup']:.2f}x | {r['gflops']:.3f} "
            f"| {check} | {r['peak_mb']:.1f} |"
        )
    return "\n".join(lines)


def format_targets(rows: list[dict]) -> str:
    at = {r["op"]: r for r in rows if r["L"] == 8192}
    if not at:
        return "Targets are defined at L=8192, which this run did not measure."
    lines = [
        "Targets at L=8192 (speed-up over causal softmax, same rounds). The FLOP ratio is "
        "softmax's FLOPs over the operator's (formula): the speed-up if both ran at the same "
        "FLOP rate, so a target above it asks the operator's kernels to outrun causal flash "
        "attention's.",
        "",
    ]
    for name, target in TARGETS.items():
        got = at[name]["speedup"]
        verdict = "met" if got >= target else "NOT met"
        ratio = at["softmax"]["gflops"] / at[name]["gflops"]
        lines.append(
            f"- `{name}` ≥ {target}x: measured {got:.2f}x, {verdict} (FLOP ratio {ratio:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    parser.add_argument("--section", default="ops", help="BENCHMARKS.md section (ops-threads: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    missing = set(MIXERS) - set(list_ops("mixer"))
    if missing:
        print(f"error: operators not registered: {sorted(missing)}", file=sys.stderr)
        return 2
    rows = [row for length in args.lengths for row in bench_length(length, args.repeats)]
    body = "\n\n".join(
        [
            header(
                f"Token mixers: latency, FLOPs, memory, {args.threads} thread(s) (benchmarks/ops.py)",
                command_line(),
            ),
            f"B=1, D={DIM}, {HEADS} heads of {HEAD_DIM}, causal, float32, inference mode; median of "
            f"{args.repeats} interleaved rounds (torch.utils.benchmark).",
            format_table(rows),
            format_targets(rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
