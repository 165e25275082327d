"""Smoke run: build every architecture preset and time its forward pass on this machine.

``python -m nas.smoke [--seq-len 512] [--threads N]`` (``make smoke``): a quick check that the
operator library works end to end on this machine, timed with ``nas.latency.measure``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from nas.latency import example_input, measure
from search_spaces import Arch, build_model, load_arch
from search_spaces.config_paths import available


def smoke_shape(arch: Arch, seq_len: int) -> tuple[int, ...]:
    """One sequence of ``seq_len`` tokens (at most the model's), or one image."""
    h = arch.head
    if arch.grid:
        return (1, h.in_chans, h.image_size, h.image_size)
    return (1, min(seq_len, h.max_len))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seq-len", type=int, default=512, help="tokens per sequence (default 512)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    names = available("arch")
    header = f"{'preset':<24}{'layers':>7}{'params':>12}{'GFLOPs':>9}{'input':>18}{'median ms':>11}{'IQR ms':>8}"
    print(f"Timing {len(names)} architecture presets on CPU, {args.threads} threads\n{header}")
    for name in names:
        arch = load_arch(name)
        model = build_model(arch).eval()
        x = example_input(arch, smoke_shape(arch, args.seq_len))
        m = measure(model, x, threads=args.threads, min_run_time=0.3)
        tokens = x.shape[1] if x.dim() == 2 else arch.max_len
        print(
            f"{name:<24}{arch.depth:>7}{model.num_params():>12,}{model.flops(tokens) / 1e9:>9.3f}"
            f"{str(tuple(x.shape)):>18}{m.median_ms:>11.2f}{m.iqr_ms:>8.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
