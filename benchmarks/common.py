"""Shared by the benchmark scripts: the machine description and writing BENCHMARKS.md sections."""

from __future__ import annotations

import datetime
import platform
import re
import sys
from pathlib import Path

import torch

from common.timing import peak_memory_bytes  # noqa: F401  (the one timing core)

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine_description() -> str:
    """CPU model (or GPU name), thread count and library versions: what a number depends on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} threads{gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def write_section(key: str, body: str) -> None:
    """Replace (or append) the section ``key`` of BENCHMARKS.md, keeping the other sections."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    section = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


def header(title: str, command: str) -> str:
    today = datetime.date.today().isoformat()
    return (
        f"## {title}\n\nCommand: `{command}`  \nMachine: {machine_description()}  \nDate: {today}\n"
    )


def command_line() -> str:
    return " ".join(["python", *sys.argv])
