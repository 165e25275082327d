"""Smoke run: build every architecture preset and time its forward pass on this machine.

``python -m nas.smoke [--seq-len 512] [--threads N]``. This is the platform's main job until
the search (``python -m nas.search``) lands; it exercises the operator library end to end.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils import benchmark

from search_spaces import Arch, build_model, load_arch
from search_spaces.config_paths import available


def example_input(arch: Arch, seq_len: int) -> torch.Tensor:
    """One deployment-like input: ``seq_len`` tokens, or one image for image models."""
    h = arch.head
    if h.kind == "image_cls":
        return torch.randn(1, h.in_chans, h.image_size, h.image_size)
    return torch.randint(0, h.vocab_size, (1, min(seq_len, h.max_len)))


def time_forward(model: torch.nn.Module, x: torch.Tensor, threads: int) -> float:
    """Median forward time in milliseconds (torch.utils.benchmark, inference mode)."""
    timer = benchmark.Timer(
        stmt="with torch.inference_mode(): model(x)",
        globals={"model": model, "x": x, "torch": torch},
        num_threads=threads,
    )
    return timer.blocked_autorange(min_run_time=0.3).median * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seq-len", type=int, default=512, help="tokens per sequence (default 512)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    names = available("arch")
    header = f"{'preset':<24}{'layers':>7}{'params':>12}{'GFLOPs':>9}{'input':>18}{'median ms':>11}"
    print(f"Timing {len(names)} architecture presets on CPU, {args.threads} threads\n{header}")
    for name in names:
        arch = load_arch(name)
        model = build_model(arch).eval()
        x = example_input(arch, args.seq_len)
        ms = time_forward(model, x, args.threads)
        tokens = x.shape[1] if x.dim() == 2 else arch.max_len
        print(
            f"{name:<24}{arch.depth:>7}{model.num_params():>12,}{model.flops(tokens) / 1e9:>9.3f}"
            f"{str(tuple(x.shape)):>18}{ms:>11.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
