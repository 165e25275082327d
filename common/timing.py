"""The one timing core: ``Runner`` (a model ready to time on CPU or GPU) and ``alternating_rounds``
(a candidate and a reference timed in alternating short rounds of the same window), used by
``nas.latency`` for architectures and by grafting for plans.

Rounds are short (one block each) because the load of a shared machine changes within a second;
the ratio of the two blocks of a round is what a noisy machine still measures well.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark
from torch.utils.benchmark.utils.common import set_torch_threads

from common.device import check_clock, check_device

BLOCK_TIME = 0.01  # seconds: a timed block repeats fast models so timer overhead stays small
Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def peak_memory_bytes(fn: Callable[[], Any]) -> int:
    """Peak extra CPU memory while ``fn()`` runs, from the profiler's allocation events
    (running sum of every event's own allocations and frees, in time order)."""
    # Kineto logs each profiler start/stop to stderr; keep it quiet unless a level is set
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = itertools.accumulate(e.self_cpu_memory_usage for e in events)
    return max(running, default=0)


class Runner:
    """One model ready to time: on its device, in inference mode, with its input (a tensor,
    passed positionally, or a mapping of keyword tensors such as ``input_ids``/``attention_mask``).

    ``sample`` uses ``torch.utils.benchmark.Timer.blocked_autorange`` on ``threads`` threads on
    CPU. ``block`` times one block of ``number`` calls (chosen by ``calibrate`` so that a block
    lasts at least ``block_time``) for interleaved rounds; on GPU with CUDA events around the
    block after a synchronisation."""

    def __init__(
        self, model: nn.Module, inputs: Inputs, device: str, threads: int, clock: str = "wall"
    ) -> None:
        self.device = check_device(device)
        self.model = model.to(self.device)
        if isinstance(inputs, Mapping):
            self.inputs: Inputs = {k: v.to(self.device) for k, v in inputs.items()}
        else:
            self.inputs = inputs.to(self.device)
        self.threads, self.number, self.clock = threads, 1, clock
        self._clock = check_clock(clock, self.device, threads)

    def __call__(self) -> None:
        with torch.inference_mode():
            if isinstance(self.inputs, Mapping):
                self.model(**self.inputs)
            else:
                self.model(self.inputs)

    def calibrate(self, warmup: int, block_time: float) -> None:
        """Run ``warmup`` calls (at least one), then choose the calls per block."""
        with set_torch_threads(self.threads):
            for _ in range(max(warmup, 1)):
                self._sync()
                start = time.perf_counter()
                self()
                self._sync()
                seconds = time.perf_counter() - start
        self.number = min(max(1, math.ceil(block_time / max(seconds, 1e-9))), 100_000)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def block(self) -> float:
        """Seconds per call, from one timed block of ``self.number`` calls."""
        # not Timer.timeit: it adds two untimed calls to every measurement, which would pull the
        # two halves of an interleaved round apart in time
        if self.device.type != "cuda":
            with set_torch_threads(self.threads):
                start = self._clock()
                for _ in range(self.number):
                    self()
                return (self._clock() - start) / self.number
        with torch.cuda.device(self.device), set_torch_threads(self.threads):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()  # nothing queued earlier is counted in this block
            start.record()
            for _ in range(self.number):
                self()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / self.number  # ms -> s per call

    def sample(self, min_run_time: float, min_runs: int = 1) -> list[float]:
        """Seconds per call of consecutive blocks, for ``min_run_time`` s and ``min_runs``."""
        if self.device.type == "cpu":
            timer = benchmark.Timer(
                stmt="fn()", globals={"fn": self}, timer=self._clock, num_threads=self.threads
            )
            times = list(timer.blocked_autorange(min_run_time=min_run_time).times)
            while len(times) < min_runs:  # a slow model fills min_run_time with few blocks
                times.append(self.block())
            return times
        times, begin = [], time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - begin < min_run_time:
            times.append(self.block())
        return times

    def peak_memory(self) -> int:
        """Peak bytes allocated during one forward beyond what was already allocated (so the
        activations and workspace, not the weights or the input)."""
        with set_torch_threads(self.threads):
            if self.device.type != "cuda":
                return peak_memory_bytes(self)
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            self()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before

    def flops(self) -> int | None:
        """Analytic FLOPs of one forward on the whole input (batch included), if known."""
        arch = getattr(self.model, "arch", None)
        if not hasattr(self.model, "flops") or isinstance(self.inputs, Mapping):
            return None
        seq_len = arch.max_len if arch is not None and arch.grid else self.inputs.shape[1]
        return self.inputs.shape[0] * int(self.model.flops(seq_len))

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def alternating_rounds(
    candidate: Runner, reference: Runner, *, repeats: int, min_run_time: float
) -> list[tuple[float, float, float]]:
    """``(ratio, candidate s, reference s)`` of at least ``repeats`` rounds and ``min_run_time``
    seconds in all; a round times one block of each, in the order A B, then B A, ... Both
    runners must be calibrated."""
    if repeats < 1:
        raise ValueError(f"`repeats >= 1` must hold, but got {repeats=}")
    runners = (candidate, reference)
    rounds: list[tuple[float, float, float]] = []
    begin = time.perf_counter()
    while len(rounds) < repeats or time.perf_counter() - begin < min_run_time:
        times = [0.0, 0.0]
        for i in (0, 1) if len(rounds) % 2 == 0 else (1, 0):
            times[i] = runners[i].block()
        rounds.append((times[0] / times[1], *times))
    return rounds


def median_round(rounds: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The (low) median round by ratio: its ratio is exactly its candidate / reference times."""
    return sorted(rounds)[(len(rounds) - 1) // 2]
