"""Hardware latency: measured, cached, predicted (see ``python -m nas.latency``).

Public API::

    measure(model_or_arch, shape_or_input, device)      one model: median, IQR, runs, memory, ...
    measure_relative(arch, reference, shape, device)    candidate and reference interleaved
    device_fingerprint(device, threads, clock)          CPU model / GPU name, threads, torch
    example_input(arch, shape), latency_arch(arch, shape)
    LatencyCache(path)                                  SQLite records shared by processes
    cached_latency(arch, reference, shape, device, cache, mode=...)   per search candidate
    LatencyEstimator.for_space(space, shape, mode=...)  the same, settings bundled
    build_table / load_or_build_table / LatencyTable    per-operator lookup table (prediction)
"""

from common.device import CLOCKS, DeviceFingerprint, check_device, device_fingerprint
from common.timing import peak_memory_bytes
from nas.latency.cache import (
    MODES,
    LatencyCache,
    LatencyEstimator,
    LatencyRecord,
    cached_latency,
    predicted_record,
)
from nas.latency.measure import (
    Measurement,
    RelativeMeasurement,
    default_latency_shape,
    example_input,
    latency_arch,
    measure,
    measure_relative,
)
from nas.latency.predictor import LatencyTable, build_table, load_or_build_table, table_path

__all__ = [
    "CLOCKS",
    "MODES",
    "DeviceFingerprint",
    "LatencyCache",
    "LatencyEstimator",
    "LatencyRecord",
    "LatencyTable",
    "Measurement",
    "RelativeMeasurement",
    "build_table",
    "cached_latency",
    "check_device",
    "default_latency_shape",
    "device_fingerprint",
    "example_input",
    "latency_arch",
    "load_or_build_table",
    "measure",
    "measure_relative",
    "peak_memory_bytes",
    "predicted_record",
    "table_path",
]
