"""Predicted latency: a per-operator lookup table measured on the device, summed per
architecture (as HAT and Once-for-All do).

For a space, a device and a latency shape (B, L), every operator variant of the space (each
mixer, channel mixer and norm with each combination of its hyperparameters) is timed in
isolation on a (B, L, D) input at each width D of the space, together with the fixed parts per
width (stem + head, a residual add, and the hyper-connection mixing of looped spaces). Entries
are timed in interleaved rounds and the median per entry is kept, so a drift of a shared machine
spreads over all entries instead of biasing a few. An architecture's latency is then

    fixed(D) + [final norm (pre-norm)] + sum over blocks and passes of
        mixer + channel + norms of the block + 2 residual adds   (+ hyper-connections per pass)

A table is built once per (space, head, shape, device fingerprint) and stored as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_write_text
from common.device import DeviceFingerprint, device_fingerprint
from common.timing import Runner
from nas.latency.measure import (
    Shape,
    check_shape,
    example_input,
    latency_arch,
    tokens_per_input,
)
from search_spaces import Arch, HeadSpec, OpSpec, create_op
from search_spaces.heads import HEAD_TYPES
from search_spaces.looped import HyperConnectionLoop
from search_spaces.space import SearchSpace

TABLE_VERSION = 1
NORMS_PER_BLOCK = {"sequential": 2, "parallel": 1}


def _canonical(value: Any) -> Any:
    """Integral floats become ints so that ``rope_theta: 10000`` and ``10000.0`` match."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def op_key(kind: str, dim: int, spec: OpSpec) -> str:
    """The table key of operator ``spec`` of ``kind`` at width ``dim``."""
    return f"{kind}/{dim}/" + json.dumps(_canonical(spec.to_dict()), sort_keys=True)


def _head_without_length(head: HeadSpec) -> dict[str, Any]:
    return {k: v for k, v in head.to_dict().items() if k not in ("max_len", "image_size")}


class _Ends(nn.Module):
    """The fixed parts of a model at one width: stem then head (no trunk)."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        stem_cls, head_cls = HEAD_TYPES[arch.head.kind]
        self.stem, self.head = stem_cls(arch), head_cls(arch)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(inputs))


class _ResidualAdd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


@dataclass
class LatencyTable:
    """Per-operator latencies (ms) of one space on one device at one shape; see module docs."""

    space: str
    space_hash: str
    head: dict[str, Any]
    shape: Shape
    fingerprint: dict[str, Any]
    entries: dict[str, float]
    build_seconds: float = 0.0
    created: float = 0.0

    @property
    def device_key(self) -> str:
        return DeviceFingerprint(**self.fingerprint).key

    def entry(self, key: str, where: str) -> float:
        if key not in self.entries:
            raise ValueError(
                f"latency table of space {self.space!r} has no entry for {where} ({key}); the "
                f"architecture is outside the space the table was built for"
            )
        return self.entries[key]

    def predict_ms(self, arch: Arch) -> float:
        """Predicted latency (ms) of ``arch`` at the table's shape."""
        if _head_without_length(arch.head) != _head_without_length(HeadSpec(**self.head)):
            raise ValueError(
                f"latency table of space {self.space!r} was built for head {self.head}, "
                f"got {arch.head.to_dict()}"
            )
        d = arch.dim
        total = self.entry(f"fixed/{d}", "the stem and head")
        if arch.norm_placement == "pre":
            total += self.entry(op_key("norm", d, arch.layers[-1].norm), "the final norm")
        lp = arch.loop_spec
        for i, layer in enumerate(arch.layers):
            block = 2 * self.entry(f"add/{d}", "the residual add")
            block += NORMS_PER_BLOCK[arch.block] * self.entry(
                op_key("norm", d, layer.norm), f"layers[{i}].norm"
            )
            for kind in ("mixer", "channel"):
                spec = getattr(layer, kind)
                block += self.entry(op_key(kind, d, spec), f"layers[{i}].{kind}")
            looped = lp.begin <= i < lp.begin + lp.middle
            total += block * (lp.repeats if looped else 1)
        if lp.middle and lp.streams > 1:
            total += lp.repeats * self.entry(f"hyper{lp.streams}/{d}", "hyper-connections")
        return total

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (a failed write leaves no partial file)."""
        data = {"version": TABLE_VERSION, **dataclasses.asdict(self)}
        return atomic_write_text(path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        data = json.loads(Path(path).read_text())
        if data.pop("version", None) != TABLE_VERSION:
            raise ValueError(f"{path}: not a latency table of version {TABLE_VERSION}")
        return cls(**{**data, "shape": tuple(data["shape"])})


def space_hash(space: SearchSpace, head: HeadSpec, shape: Shape) -> str:
    """What a table depends on besides the device: the space's choices, the head, the shape."""
    data = {"space": _canonical(space.data), "head": head.to_dict(), "shape": list(shape)}
    text = json.dumps({**data, "version": TABLE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _table_runners(
    space: SearchSpace, head: HeadSpec, shape: Shape, device: str, threads: int, clock: str
) -> dict[str, Runner]:
    base = latency_arch(space.baseline(head), shape)
    batch, length = shape[0], tokens_per_input(base, shape)
    context = {
        "causal": base.causal,
        "head_dim": space.head_dim,
        "grid": base.grid,
        "max_len": length,
    }
    inputs = example_input(base, shape)
    streams = sorted({s for s in (space.loop or {}).get("streams", ()) if s > 1})
    runners: dict[str, Runner] = {}
    for dim in space.dims:
        torch.manual_seed(0)
        x = torch.randn(batch, length, dim)
        runners[f"fixed/{dim}"] = Runner(
            _Ends(base.replace(dim=dim)).eval(), inputs, device, threads, clock
        )
        runners[f"add/{dim}"] = Runner(_ResidualAdd(), x, device, threads, clock)
        for n in streams:
            loop = HyperConnectionLoop(nn.ModuleList(), repeats=1, streams=n)
            runners[f"hyper{n}/{dim}"] = Runner(loop.eval(), x, device, threads, clock)
        for kind, choices in (
            ("mixer", space.mixers),
            ("channel", space.channels),
            ("norm", space.norms),
        ):
            for op in choices:
                for hparams in op.variants():
                    module = create_op(op.name, dim, kind=kind, context=context, **hparams)
                    key = op_key(kind, dim, OpSpec(op.name, hparams))
                    runners[key] = Runner(module.eval(), x, device, threads, clock)
    return runners


def build_table(
    space: SearchSpace,
    shape: Shape,
    device: str = "cpu",
    *,
    head: HeadSpec | None = None,
    threads: int | None = None,
    rounds: int = 25,
    block_time: float = 0.0,
    warmup: int = 1,
    clock: str = "wall",
    progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Time every entry of ``space``'s table in ``rounds`` interleaved rounds (the order reversed
    every other round), one block of calls (at least ``block_time`` s) per entry per round;
    the median per entry is kept. The default, one call per block, times each operator after a
    different one, as in a model: repeating it in a block keeps its weights and activations in
    cache, which biases the prediction of narrow models low."""
    if rounds < 1:
        raise ValueError(f"`rounds >= 1` must hold, but got {rounds=}")
    head = head or space.default_head
    shape = check_shape(space.baseline(head), shape)
    threads = threads or torch.get_num_threads()
    fp = device_fingerprint(device, threads, clock)
    begin = time.perf_counter()
    runners = _table_runners(space, head, shape, device, threads, clock)
    for runner in runners.values():
        runner.calibrate(warmup, block_time)
    times: dict[str, list[float]] = {key: [] for key in runners}
    for r in range(rounds):
        for key in list(runners)[:: 1 if r % 2 == 0 else -1]:
            times[key].append(runners[key].block())
        if progress and ((r + 1) % 5 == 0 or r + 1 == rounds):
            progress(f"latency table {space.name}: round {r + 1}/{rounds} ({len(runners)} entries)")
    return LatencyTable(
        space=space.name,
        space_hash=space_hash(space, head, shape),
        head=head.to_dict(),
        shape=shape,
        fingerprint=fp.to_dict(),
        entries={key: statistics.median(v) * 1e3 for key, v in times.items()},
        build_seconds=time.perf_counter() - begin,
        created=time.time(),
    )


def table_path(
    directory: str | os.PathLike, space: SearchSpace, head: HeadSpec, shape: Shape, device_key: str
) -> Path:
    """Where the table of (space, head, shape, device) is cached inside ``directory``."""
    name = f"latency-table-{space.name}-{space_hash(space, head, shape)}-{device_key}.json"
    return Path(directory) / name


def load_or_build_table(
    space: SearchSpace,
    shape: Shape,
    device: str = "cpu",
    directory: str | os.PathLike = "runs/latency",
    *,
    head: HeadSpec | None = None,
    threads: int | None = None,
    clock: str = "wall",
    rebuild: bool = False,
    **build_kwargs: Any,
) -> tuple[LatencyTable, Path, bool]:
    """The cached table of (space, head, shape, device fingerprint), built and saved when absent
    (or when ``rebuild``). Returns ``(table, path, built_now)``."""
    head = head or space.default_head
    shape = check_shape(space.baseline(head), shape)
    threads = threads or torch.get_num_threads()
    path = table_path(directory, space, head, shape, device_fingerprint(device, threads, clock).key)
    if path.is_file() and not rebuild:
        try:
            return LatencyTable.load(path), path, False
        except (ValueError, TypeError, KeyError):
            pass  # unreadable or outdated: measure again and replace it
    table = build_table(
        space, shape, device, head=head, threads=threads, clock=clock, **build_kwargs
    )
    return table, table.save(path), True
