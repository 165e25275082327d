"""The persistent latency cache and the per-candidate entry point of the search.

``LatencyCache`` is one SQLite file (WAL journal, busy timeout) that several processes read and
write at once. A record is keyed by (arch signature, reference signature, device fingerprint,
shape): the ratio means nothing without its reference, so the reference is part of the key.
Only measured records are stored; predictions are cheap and come from the lookup table.

``cached_latency`` is what the search calls per candidate (``LatencyEstimator`` bundles its
settings). ``mode``:

- ``measured``: the cached record, else measure (interleaved with the reference) and store;
- ``predicted``: the lookup table's prediction, never a measurement;
- ``predicted+verify``: predictions while searching; with ``verify=True`` (for the candidates
  about to be reported) a measured record, so a reported latency is always a measured one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.device import device_fingerprint
from nas.latency.measure import (
    BLOCK_TIME,
    Shape,
    check_shape,
    latency_arch,
    measure_relative,
    tokens_per_input,
)
from nas.latency.predictor import LatencyTable, load_or_build_table
from search_spaces import Arch, HeadSpec, build_model
from search_spaces.space import SearchSpace

MODES = ("measured", "predicted", "predicted+verify")
FIELDS = (
    "arch",
    "reference",
    "device",
    "shape",
    "ms",
    "ref_ms",
    "ratio",
    "iqr_ms",
    "runs",
    "peak_bytes",
    "params",
    "flops",
    "latency_source",
    "fingerprint",
    "created",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    arch TEXT NOT NULL, reference TEXT NOT NULL, device TEXT NOT NULL, shape TEXT NOT NULL,
    ms REAL, ref_ms REAL, ratio REAL, iqr_ms REAL, runs INTEGER, peak_bytes INTEGER,
    params INTEGER, flops INTEGER, latency_source TEXT, fingerprint TEXT, created REAL,
    PRIMARY KEY (arch, reference, device, shape)
)"""


@dataclass(frozen=True)
class LatencyRecord:
    """One candidate's latency relative to a reference, on one device at one shape.

    ``ratio == ms / ref_ms``. For measured records both times come from the same window; for
    predicted ones both are predicted by the same table. ``runs`` is 0 for predictions."""

    arch: str  # signature
    reference: str  # signature
    device: str  # fingerprint key
    shape: Shape
    ms: float
    ref_ms: float
    ratio: float
    iqr_ms: float
    runs: int
    peak_bytes: int | None
    params: int
    flops: int | None
    latency_source: str  # "measured" | "predicted"
    fingerprint: dict[str, Any]
    created: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ms_at(self, ref_ms: float) -> float:
        """The candidate's latency against the reference's current time ``ref_ms``."""
        return self.ratio * ref_ms


def _signature(arch: Arch | str) -> str:
    return arch.signature if isinstance(arch, Arch) else str(arch)


def _shape_key(shape: Shape) -> str:
    return "x".join(str(int(s)) for s in shape)


class LatencyCache:
    """Measured latency records in one SQLite file shared by processes."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0) -> None:
        self.path, self.timeout = Path(path), timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            con.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # a connection per call: safe across fork and threads, cheap next to a measurement
        con = sqlite3.connect(self.path, timeout=self.timeout)
        con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return con

    def get(
        self, arch: Arch | str, reference: Arch | str, device: str, shape: Shape
    ) -> LatencyRecord | None:
        """The record of ``arch`` vs ``reference`` on fingerprint key ``device`` at ``shape``."""
        key = (_signature(arch), _signature(reference), device, _shape_key(shape))
        query = f"SELECT {', '.join(FIELDS)} FROM latency WHERE arch=? AND reference=? AND device=? AND shape=?"
        with closing(self._connect()) as con:
            row = con.execute(query, key).fetchone()
        return None if row is None else self._record(row)

    def put(self, record: LatencyRecord) -> None:
        """Insert or replace ``record`` (one transaction)."""
        values = {**record.to_dict(), "shape": _shape_key(record.shape)}
        values["fingerprint"] = json.dumps(record.fingerprint, sort_keys=True)
        marks = ", ".join("?" * len(FIELDS))
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT OR REPLACE INTO latency ({', '.join(FIELDS)}) VALUES ({marks})",
                [values[f] for f in FIELDS],
            )

    def records(self) -> list[LatencyRecord]:
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT {', '.join(FIELDS)} FROM latency").fetchall()
        return [self._record(row) for row in rows]

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return con.execute("SELECT COUNT(*) FROM latency").fetchone()[0]

    @staticmethod
    def _record(row: tuple) -> LatencyRecord:
        values = dict(zip(FIELDS, row, strict=True))
        values["shape"] = tuple(int(s) for s in values["shape"].split("x"))
        values["fingerprint"] = json.loads(values["fingerprint"])
        return LatencyRecord(**values)


def _model_counts(arch: Arch, shape: Shape) -> tuple[int, int]:
    """Parameters and analytic FLOPs (whole input) without allocating: built on ``meta``."""
    with torch.device("meta"):
        model = build_model(latency_arch(arch, shape))
    return model.num_params(), shape[0] * model.flops(tokens_per_input(arch, shape))


def predicted_record(
    table: LatencyTable, arch: Arch, reference: Arch, shape: Shape, device_key: str
) -> LatencyRecord:
    """The table's prediction for ``arch`` and ``reference`` as a record."""
    ms, ref_ms = table.predict_ms(arch), table.predict_ms(reference)
    params, flops = _model_counts(arch, shape)
    return LatencyRecord(
        arch.signature,
        reference.signature,
        device_key,
        shape,
        ms,
        ref_ms,
        ms / ref_ms,
        iqr_ms=0.0,
        runs=0,
        peak_bytes=None,
        params=params,
        flops=flops,
        latency_source="predicted",
        fingerprint=table.fingerprint,
        created=time.time(),
    )


def cached_latency(
    arch: Arch,
    reference: Arch,
    shape: Shape,
    device: str = "cpu",
    cache: LatencyCache | None = None,
    *,
    mode: str = "measured",
    table: LatencyTable | None = None,
    verify: bool = False,
    threads: int | None = None,
    repeats: int = 15,
    min_run_time: float = 3.0,
    warmup: int = 2,
    block_time: float = BLOCK_TIME,
    clock: str = "wall",
) -> tuple[LatencyRecord, bool]:
    """The latency record of ``arch`` relative to ``reference`` and whether it came from the
    cache (see the module docstring for ``mode`` and ``verify``)."""
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, but got {mode=}")
    shape = check_shape(arch, shape)
    fp = device_fingerprint(device, threads, clock)
    if mode == "predicted" or (mode == "predicted+verify" and not verify):
        if table is None:
            raise ValueError(f"mode={mode!r} needs a latency table (see load_or_build_table)")
        if table.device_key != fp.key or tuple(table.shape) != shape:
            raise ValueError(
                f"the latency table was built for device {table.device_key} at shape "
                f"{tuple(table.shape)}, but this estimate is for {fp.key} at {shape}"
            )
        return predicted_record(table, arch, reference, shape, fp.key), False
    if cache is not None:
        record = cache.get(arch, reference, fp.key, shape)
        if record is not None:
            return record, True
    rel = measure_relative(
        arch,
        reference,
        shape,
        device,
        repeats,
        threads=fp.threads,
        min_run_time=min_run_time,
        warmup=warmup,
        block_time=block_time,
        clock=clock,
    )
    c = rel.candidate
    record = LatencyRecord(
        arch.signature,
        reference.signature,
        fp.key,
        shape,
        c.median_ms,
        rel.reference.median_ms,
        rel.ratio,
        c.iqr_ms,
        c.runs,
        c.peak_bytes,
        c.params,
        c.flops,
        latency_source="measured",
        fingerprint=fp.to_dict(),
        created=time.time(),
    )
    if cache is not None:
        cache.put(record)
    return record, False


@dataclass
class LatencyEstimator:
    """The settings of ``cached_latency`` in one object: the search calls ``estimator(arch)`` per
    candidate and ``estimator.verify(arch)`` for the candidates it reports."""

    reference: Arch
    shape: Shape
    device: str = "cpu"
    cache: LatencyCache | None = None
    mode: str = "measured"
    table: LatencyTable | None = None
    threads: int | None = None
    repeats: int = 15  # at least this many alternating rounds per measurement
    min_run_time: float = 3.0  # and at least this many seconds
    clock: str = "wall"

    def __call__(self, arch: Arch, *, verify: bool = False) -> tuple[LatencyRecord, bool]:
        return cached_latency(
            arch,
            self.reference,
            self.shape,
            self.device,
            self.cache,
            mode=self.mode,
            table=self.table,
            verify=verify,
            threads=self.threads,
            repeats=self.repeats,
            min_run_time=self.min_run_time,
            clock=self.clock,
        )

    def verify(self, arch: Arch) -> tuple[LatencyRecord, bool]:
        """A measured record in ``predicted+verify`` mode; otherwise the same as a call."""
        return self(arch, verify=True)

    @classmethod
    def for_space(
        cls,
        space: SearchSpace,
        shape: Shape,
        *,
        head: HeadSpec | None = None,
        directory: str | os.PathLike = "runs/latency",
        mode: str = "measured",
        table_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LatencyEstimator:
        """Reference = the space's baseline (with ``head``); the cache is
        ``directory/latency.sqlite`` and, for predicted modes, the lookup table is loaded from
        (or built into) ``directory``."""
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, but got {mode=}")
        reference = space.baseline(head)
        table = None
        if mode != "measured":
            device, threads = kwargs.get("device", "cpu"), kwargs.get("threads")
            table, _, _ = load_or_build_table(
                space,
                shape,
                device,
                directory,
                head=head,
                threads=threads,
                clock=kwargs.get("clock", "wall"),
                **(table_options or {}),
            )
        cache = LatencyCache(Path(directory) / "latency.sqlite")
        return cls(reference, tuple(shape), cache=cache, mode=mode, table=table, **kwargs)
