"""Timing a model on a device: ``measure`` (one model) and ``measure_relative`` (a candidate and
a reference interleaved in the same window), plus the device fingerprint and example inputs.

The device, its fingerprint and the clocks are in ``common.device``; the timing core (``Runner``,
alternating rounds) is ``common.timing``, shared with grafting.

The latency shape is a deployment setting, not the training length: an ``Arch`` whose
``head.max_len`` is shorter than the latency length is timed as a copy with ``max_len`` raised
(``latency_arch``). Only ``max_len``-sized parameters (learned positions, explicit long filters)
grow; the work per token is unchanged, so this is the cost the model would have if deployed at
that length. The arch's own signature stays the cache key.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from common.device import (
    DeviceFingerprint,
    device_fingerprint,
)
from common.timing import BLOCK_TIME, Runner, alternating_rounds, median_round
from search_spaces import Arch, build_model

Shape = tuple[int, ...]
DEFAULT_TOKENS = 2048  # deployment-like default length, as ``Task.latency_shape``


# -- shapes and inputs --------------------------------------------------------------------------
def default_latency_shape(arch: Arch) -> Shape:
    """``(1, 2048)`` token ids, or one image at the head's size ``(1, C, S, S)``."""
    h = arch.head
    return (1, h.in_chans, h.image_size, h.image_size) if arch.grid else (1, DEFAULT_TOKENS)


def check_shape(arch: Arch, shape: Sequence[int]) -> Shape:
    """``shape`` as a tuple, checked against the head: (B, L) for tokens, (B, C, H, H) images."""
    shape = tuple(int(s) for s in shape)
    want = "(B, C, H, W) with C == head.in_chans and H == W" if arch.grid else "(B, L)"
    ok = all(s >= 1 for s in shape) and len(shape) == (4 if arch.grid else 2)
    if ok and arch.grid:
        ok = shape[1] == arch.head.in_chans and shape[2] == shape[3]
        ok = ok and shape[2] % arch.head.patch_size == 0
    if not ok:
        raise ValueError(
            f"`latency_shape` must be {want} for a {arch.head.kind!r} head, got {shape}"
        )
    return shape


def latency_arch(arch: Arch, shape: Sequence[int]) -> Arch:
    """The architecture to time at ``shape``: ``arch``, or a copy whose ``head.max_len`` (tokens)
    or ``head.image_size`` (images) is set to the latency shape when they differ (see module
    docstring)."""
    shape = check_shape(arch, shape)
    h = arch.head
    if arch.grid and shape[2] != h.image_size:
        return arch.replace(head=dataclasses.replace(h, image_size=shape[2]))
    if not arch.grid and shape[1] > h.max_len:
        return arch.replace(head=dataclasses.replace(h, max_len=shape[1]))
    return arch


def tokens_per_input(arch: Arch, shape: Sequence[int]) -> int:
    """Sequence length the trunk sees for one input of ``shape``."""
    shape = check_shape(arch, shape)
    return (shape[2] // arch.head.patch_size) ** 2 if arch.grid else shape[1]


def example_input(arch: Arch, shape: Sequence[int], *, seed: int = 0) -> torch.Tensor:
    """A valid input of ``shape``: token ids below ``head.vocab_size``, or standard-normal images."""
    shape = check_shape(arch, shape)
    gen = torch.Generator().manual_seed(seed)
    if arch.grid:
        return torch.randn(shape, generator=gen)
    return torch.randint(0, arch.head.vocab_size, shape, generator=gen)


def arch_runner(
    arch: Arch, shape: Sequence[int], device: str, threads: int, clock: str = "wall"
) -> Runner:
    """A ``Runner`` for the model built from ``arch`` (``latency_arch``) on an example input."""
    torch.manual_seed(0)
    model = build_model(latency_arch(arch, shape)).eval()
    return Runner(model, example_input(arch, shape), device, threads, clock)


@dataclass(frozen=True)
class Measurement:
    """One model's latency on one device at one input shape."""

    median_ms: float
    iqr_ms: float
    runs: int  # timed blocks (samples) the median and IQR are taken over
    peak_bytes: int  # peak extra memory of one forward (activations, not weights)
    params: int
    flops: int | None  # analytic, for the whole input (batch included)
    shape: Shape
    fingerprint: DeviceFingerprint

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fingerprint": self.fingerprint.to_dict()}


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def _summary(runner: Runner, times: list[float], median_s: float, fp: DeviceFingerprint):
    return Measurement(
        median_ms=median_s * 1e3,
        iqr_ms=_iqr(times) * 1e3,
        runs=len(times),
        peak_bytes=int(runner.peak_memory()),
        params=runner.params(),
        flops=runner.flops(),
        shape=tuple(runner.inputs.shape),
        fingerprint=fp,
    )


def measure(
    model: nn.Module | Arch,
    input_spec: torch.Tensor | Sequence[int],
    device: str = "cpu",
    *,
    threads: int | None = None,
    min_run_time: float = 1.0,
    min_runs: int = 5,
    warmup: int = 3,
    block_time: float = BLOCK_TIME,
    clock: str = "wall",
) -> Measurement:
    """Time ``model`` (an ``Arch`` is built with ``latency_arch``) on ``input_spec`` (a tensor, or
    a shape for a model built from an ``Arch``) on ``threads`` threads: ``warmup`` calls, then
    blocks of calls (each at least ``block_time`` s) for ``min_run_time`` s and ``min_runs``
    blocks, on ``clock`` (see ``CLOCKS``). A module is moved to ``device``; its train/eval
    mode is restored."""
    threads = threads or torch.get_num_threads()
    fp = device_fingerprint(device, threads, clock)
    if isinstance(model, Arch):
        runner = arch_runner(model, input_spec, device, threads, clock)
        was_training = False
    else:
        if not isinstance(input_spec, torch.Tensor):
            arch = getattr(model, "arch", None)
            if not isinstance(arch, Arch):
                raise ValueError("give an input tensor for a model that has no `arch`")
            input_spec = example_input(arch, input_spec)
        was_training = model.training
        runner = Runner(model.eval(), input_spec, device, threads, clock)
    try:
        runner.calibrate(warmup, block_time)
        times = runner.sample(min_run_time, min_runs)
        return _summary(runner, times, statistics.median(times), fp)
    finally:
        runner.model.train(was_training)


@dataclass(frozen=True)
class RelativeMeasurement:
    """A candidate and a reference timed in alternating rounds of the same window.

    A round times one block of each (order A B, then B A, ...); ``ratio`` is the median over
    rounds of the per-round ratio candidate / reference, and the two ``median_ms`` are the
    times of that median round, so ``ratio == candidate.median_ms / reference.median_ms``
    exactly. IQR and runs are over all rounds."""

    candidate: Measurement
    reference: Measurement
    ratio: float
    ratio_iqr: float
    rounds: int


def measure_relative(
    arch: Arch,
    reference: Arch,
    shape: Sequence[int],
    device: str = "cpu",
    repeats: int = 15,
    *,
    threads: int | None = None,
    min_run_time: float = 3.0,
    warmup: int = 2,
    block_time: float = BLOCK_TIME,
    clock: str = "wall",
) -> RelativeMeasurement:
    """Time ``arch`` and ``reference`` at ``shape`` in alternating rounds, at least ``repeats``
    rounds and ``min_run_time`` seconds in all. Rounds are short (one block each) because the
    load of a shared machine changes within a second: long blocks per model, or untimed calls
    before each timed one, let a change of load fall on one model only. The run-to-run spread
    of the ratio this gives: BENCHMARKS.md `latency_predictor`."""
    if repeats < 1:
        raise ValueError(f"`repeats >= 1` must hold, but got {repeats=}")
    threads = threads or torch.get_num_threads()
    fp = device_fingerprint(device, threads, clock)
    runners = [arch_runner(a, shape, device, threads, clock) for a in (arch, reference)]
    for runner in runners:
        runner.calibrate(warmup, block_time)
    rounds = alternating_rounds(*runners, repeats=repeats, min_run_time=min_run_time)
    ratio, cand_s, ref_s = median_round(rounds)
    return RelativeMeasurement(
        candidate=_summary(runners[0], [r[1] for r in rounds], cand_s, fp),
        reference=_summary(runners[1], [r[2] for r in rounds], ref_s, fp),
        ratio=ratio,
        ratio_iqr=_iqr([r[0] for r in rounds]),
        rounds=len(rounds),
    )
