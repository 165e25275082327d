"""The device a latency is measured on: checking it, its fingerprint (what a number depends on
besides the model, stored with every number), and the clocks a measurement can use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# "wall" is latency. "cpu" (the timing thread's CPU time, one thread only) leaves out the time a
# shared machine's scheduler gives to other processes: about half the run-to-run spread of the
# reference ratio under heavy load here, but it is not what a user waits for.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


# -- devices ----------------------------------------------------------------------------------
def check_device(device: str | torch.device) -> torch.device:
    """``cpu`` or ``cuda[:N]``; ``ValueError`` for anything else or for CUDA without a GPU."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be cpu or cuda[:N], but got {device=}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested, but CUDA is not available here")
    return dev


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor name elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a latency number depends on besides the model: stored with every number."""

    device: str  # "cpu" or "cuda"
    name: str  # CPU model or GPU name
    threads: int
    torch: str
    clock: str = "wall"  # "wall", or "cpu": the timing thread's CPU time (see ``CLOCKS``)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """Short stable hash: equal fingerprints give the same key in any process."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __str__(self) -> str:
        clock = "" if self.clock == "wall" else f", {self.clock} clock"
        return (
            f"{self.name} ({self.device}), {self.threads} threads, torch {self.torch}{clock} "
            f"[{self.key}]"
        )


def check_clock(clock: str, device: torch.device, threads: int) -> Callable[[], float]:
    """The timer function of ``clock``; ``cpu`` counts only the calling thread, so it needs one
    thread on CPU."""
    if clock not in CLOCKS:
        raise ValueError(f"`clock` must be one of {tuple(CLOCKS)}, but got {clock=}")
    if clock == "cpu" and (device.type != "cpu" or threads != 1):
        raise ValueError(
            f"clock='cpu' times the calling thread only: it needs device cpu and threads=1, "
            f"but got device={str(device)!r}, {threads=}"
        )
    return CLOCKS[clock]


def device_fingerprint(
    device: str = "cpu", threads: int | None = None, clock: str = "wall"
) -> DeviceFingerprint:
    """The fingerprint of ``device`` timed with ``threads`` CPU threads (default: torch's) and
    ``clock``."""
    dev = check_device(device)
    threads = threads or torch.get_num_threads()
    check_clock(clock, dev, threads)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    return DeviceFingerprint(dev.type, name, threads, torch.__version__, clock)
