"""Time per training step of the supernet against the same subnet extracted and trained alone.

``python benchmarks/supernet_step.py [--space efficient_attn] [--batch 32] [--seq-len 128] [--repeats 5]``

For the teacher, the smallest subnet and a random subnet of the space: one step = forward,
cross-entropy loss, backward and an AdamW update, either through the supernet (subnet active,
weights sliced from the shared store) or on the standalone model from ``extract``. Both are timed
with ``torch.utils.benchmark`` in interleaved rounds; the table reports medians and the ratio
supernet / standalone (target ≤ 1.3x).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.common import command_line, header, write_section  # noqa: E402
from search_spaces import HeadSpec  # noqa: E402
from search_spaces.space import load_space  # noqa: E402
from supernet.supernet import Supernet  # noqa: E402

TARGET = 1.3


def step_fn(model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(tokens)
        F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="efficient_attn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per measurement")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    space = load_space(args.space)
    head = HeadSpec(kind="lm", vocab_size=256, max_len=max(args.seq_len, 16))
    net = Supernet(space, head=head).train()
    tokens = torch.randint(0, 256, (args.batch, args.seq_len))
    targets = torch.randint(0, 256, (args.batch, args.seq_len))
    subnets = {
        "teacher": space.teacher(head),
        "smallest": space.smallest(head),
        "random": space.sample(random.Random(1), head=head),
    }
    steps = {}
    for name, arch in subnets.items():
        alone = net.extract(arch).train()
        net.activate(arch)
        steps[f"{name}/supernet"] = (arch, step_fn(net, tokens, targets))
        steps[f"{name}/standalone"] = (arch, step_fn(alone, tokens, targets))
    for _, fn in steps.values():  # warm-up (first-call allocations, optimiser state)
        fn()
    rounds = []
    for r in range(args.repeats):
        times = {}
        for key, (arch, fn) in steps.items():
            net.activate(arch)
            timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            times[key] = timer.timeit(args.steps).median
        rounds.append(times)
        print(f"  round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    lines = [
        "| subnet | supernet ms/step | standalone ms/step | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name in subnets:
        sup = statistics.median(rd[f"{name}/supernet"] for rd in rounds) * 1e3
        alone = statistics.median(rd[f"{name}/standalone"] for rd in rounds) * 1e3
        ratio = statistics.median(
            rd[f"{name}/supernet"] / rd[f"{name}/standalone"] for rd in rounds
        )
        verdict = "met" if ratio <= TARGET else "NOT met"
        lines.append(f"| {name} | {sup:.1f} | {alone:.1f} | {ratio:.2f}x | ≤ {TARGET}x {verdict} |")
    body = "\n\n".join(
        [
            header(
                "Supernet training step vs standalone (benchmarks/supernet_step.py)", command_line()
            ),
            f"Space `{args.space}`, batch {args.batch} x {args.seq_len} tokens, forward + backward + AdamW; "
            f"median of {args.repeats} interleaved rounds of {args.steps} steps. Subnets: "
            + "; ".join(f"{k} `{a.signature}`" for k, a in subnets.items()),
            "\n".join(lines),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("supernet_step", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
