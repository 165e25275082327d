"""``python -m nas.latency arch_file=PATH [device=cpu|cuda] [latency_shape=[1,2048]] [reference=PATH]``
``python -m nas.latency +space=NAME build_table=true [latency_shape=[1,2048]] [cache_dir=DIR]``

The first times one architecture and prints median, IQR, runs, peak memory, parameters, GFLOPs
and the device fingerprint; with ``reference=`` (or ``+space=NAME``: its baseline) both are
timed in alternating rounds and the ratio is printed too. The second builds (or loads from
``cache_dir``) the space's per-operator lookup table and prints it. Defaults: conf/latency.yaml.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import yaml
from omegaconf import DictConfig

from common.device import check_device, device_fingerprint
from nas.latency.measure import (
    Measurement,
    check_shape,
    default_latency_shape,
    latency_arch,
    measure,
    measure_relative,
)
from nas.latency.predictor import LatencyTable, load_or_build_table
from search_spaces import Arch, load_arch
from search_spaces.checks import check_int, check_number, parse_shape, user_input
from search_spaces.cli import UsageError, import_plugins, run_cli, space_from_config


def _load_arch(field: str, value: str) -> Arch:
    """An arch from a file or preset; any problem becomes one line naming the file."""
    try:
        return load_arch(str(value))
    except yaml.YAMLError as e:
        raise UsageError(f"{field}={value}: not valid YAML ({str(e).splitlines()[0]})") from None
    except (ValueError, OSError) as e:  # missing, unreadable, malformed JSON, invalid arch
        raise UsageError(f"{field}={value}: {str(e).splitlines()[0]}") from None


def _shape(cfg: DictConfig, arch: Arch) -> tuple[int, ...]:
    value = parse_shape("latency_shape", cfg.latency_shape, length=None, optional=True)
    if value is None:
        return default_latency_shape(arch)
    with user_input("latency_shape"):
        return check_shape(arch, list(value))


ROW = "{:<22}{:<18}{:>11}{:>9}{:>7}{:>10}{:>12}{:>9}"


def _row(name: str, arch: Arch, m: Measurement) -> str:
    gflops = f"{m.flops / 1e9:.3f}" if m.flops is not None else "n/a"
    return ROW.format(
        name,
        arch.signature,
        f"{m.median_ms:.3f}",
        f"{m.iqr_ms:.3f}",
        m.runs,
        f"{m.peak_bytes / 2**20:.1f}",
        f"{m.params:,}",
        gflops,
    )


def _measure(cfg: DictConfig, device: str) -> int:
    arch = _load_arch("arch_file", cfg.arch_file)
    shape = _shape(cfg, arch)
    reference = None
    if cfg.reference:
        reference = _load_arch("reference", cfg.reference)
    elif cfg.get("space") is not None or cfg.get("space_file"):
        reference = space_from_config(cfg).baseline(arch.head)
    m, threads = cfg.measure, cfg.threads
    print(
        ROW.format(
            "model", "signature", "median ms", "IQR ms", "runs", "peak MB", "params", "GFLOPs"
        )
    )
    if reference is None:
        result = measure(
            arch,
            shape,
            device,
            threads=threads,
            min_run_time=m.min_run_time,
            min_runs=m.min_runs,
            warmup=m.warmup,
            block_time=m.block_time,
            clock=cfg.clock,
        )
        print(_row("arch", arch, result))
    else:
        rel = measure_relative(
            arch,
            reference,
            shape,
            device,
            m.repeats,
            threads=threads,
            min_run_time=m.window,
            warmup=m.warmup,
            block_time=m.block_time,
            clock=cfg.clock,
        )
        result = rel.candidate
        print(_row("arch", arch, rel.candidate))
        print(_row("reference", reference, rel.reference))
        print(
            f"ratio arch/reference: {rel.ratio:.4f} (IQR {rel.ratio_iqr:.4f} over "
            f"{rel.rounds} alternating rounds; times of the median round)"
        )
    print(f"shape: {shape}" + _raised(arch, shape))
    print(f"device: {result.fingerprint}")
    return 0


def _raised(arch: Arch, shape: tuple[int, ...]) -> str:
    timed = latency_arch(arch, shape)
    if timed.head == arch.head:
        return ""
    return f" (timed with head {timed.head.to_dict()}, as the arch's head is shorter)"


def format_table(table: LatencyTable) -> str:
    """The lookup table as text: one row per entry, one column (ms) per width."""
    rows: dict[str, dict[int, float]] = {}
    for key, ms in table.entries.items():
        kind, dim, *spec = key.split("/", 2)
        label = kind
        if spec:
            params = json.loads(spec[0])
            name = params.pop("name")
            label = f"{kind} {name} " + " ".join(f"{k}={v}" for k, v in params.items())
        rows.setdefault(label.strip(), {})[int(dim)] = ms
    dims = sorted({d for row in rows.values() for d in row})
    width = max(len(label) for label in rows) + 2
    lines = [f"{'entry (ms)':<{width}}" + "".join(f"{'D=' + str(d):>10}" for d in dims)]
    for label, row in rows.items():
        cells = "".join(f"{row[d]:>10.3f}" if d in row else f"{'':>10}" for d in dims)
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)


def _build_table(cfg: DictConfig, device: str) -> int:
    space = space_from_config(cfg)
    head = space.default_head
    shape = _shape(cfg, space.baseline(head))
    t = cfg.table
    table, path, built = load_or_build_table(
        space,
        shape,
        device,
        cfg.cache_dir,
        head=head,
        threads=cfg.threads,
        clock=cfg.clock,
        rebuild=cfg.rebuild,
        rounds=t.rounds,
        block_time=t.block_time,
        warmup=t.warmup,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_table(table))
    how = f"built in {table.build_seconds:.1f} s" if built else "loaded from cache"
    print(f"space {space.name!r}, shape {shape}, {len(table.entries)} entries, {how}: {path}")
    baseline = space.baseline(head)
    print(f"predicted baseline {baseline.signature}: {table.predict_ms(baseline):.3f} ms")
    if cfg.arch_file:
        arch = _load_arch("arch_file", cfg.arch_file)
        ms = table.predict_ms(arch)
        print(
            f"predicted arch {arch.signature}: {ms:.3f} ms, "
            f"ratio {ms / table.predict_ms(baseline):.4f} to the baseline"
        )
    print(f"device: {device_fingerprint(device, cfg.threads, cfg.clock)}")
    return 0


def check_settings(cfg: DictConfig) -> str:
    """Every timing setting, checked before any model is built; returns the device."""
    check_int("threads", cfg.threads, optional=True)
    with user_input("device"):
        device = str(check_device(cfg.device))
    with user_input("clock"):
        device_fingerprint(device, cfg.threads, cfg.clock)  # a bad clock/threads pair fails here
    m, t = cfg.measure, cfg.table
    for name, value in (
        ("measure.min_runs", m.min_runs),
        ("measure.repeats", m.repeats),
        ("table.rounds", t.rounds),
    ):
        check_int(name, value)
    for name, value in (("measure.warmup", m.warmup), ("table.warmup", t.warmup)):
        check_int(name, value, minimum=0)
    for name, value in (("measure.min_run_time", m.min_run_time), ("measure.window", m.window)):
        check_number(name, value, above=0)
    for name, value in (("measure.block_time", m.block_time), ("table.block_time", t.block_time)):
        check_number(name, value, at_least=0)
    return device


def run(cfg: DictConfig) -> int:
    import_plugins(cfg)
    device = check_settings(cfg)
    if cfg.build_table:
        return _build_table(cfg, device)
    if not cfg.arch_file:
        raise UsageError(
            "give arch_file=PATH to time an architecture, or +space=NAME "
            "build_table=true to build a lookup table"
        )
    return _measure(cfg, device)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(run, "latency", argv)


if __name__ == "__main__":
    sys.exit(main())
