"""Portable programs of a search-space model (one input tensor): a ``torch.export`` program
(``model.pt2``, runs with plain PyTorch) and an ONNX model (``model.onnx``) checked against
PyTorch with onnxruntime.

Tracing, dynamic axes, the fall back to the stated shape and the ONNX check are
``common.portable``'s; this module adds the ``model.pt2`` program and its check. ``padding_mask``
is not an input of the exported programs (all tokens real).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.portable import (
    ONNX_FILE,
    ONNX_TOLERANCE,
    Checked,
    Inputs,
    axis_attempts,
    export_checked,
    first_that_works,
)

PT2_FILE = "model.pt2"


@dataclass
class PortableReport:
    """What was exported and how well it agrees with the PyTorch model."""

    shape: tuple[int, ...]  # the stated input shape
    dtype: str  # input dtype ("int64" token ids or "float32" images)
    dynamic_axes: dict[int, str] = field(default_factory=dict)  # axis -> name, kept dynamic
    pt2_max_abs_diff: float = float("nan")
    onnx_max_abs_diff: float = float("nan")  # over the stated shape (and a dynamic one)
    onnx_opset: int | None = None
    onnx_checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _random_like(example: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An input of ``shape`` (another one along the dynamic axes) drawn like ``example``."""
    g = torch.Generator().manual_seed(1)
    if example.dtype.is_floating_point:
        return torch.randn(shape, generator=g)
    return torch.randint(0, int(example.max()) + 1, shape, generator=g)


def write_portable(
    model: nn.Module, example: torch.Tensor, directory: str | os.PathLike, *, dynamic: bool = True
) -> PortableReport:
    """Write ``model.pt2`` and ``model.onnx`` of ``model`` (on CPU, eval mode) for inputs shaped
    like ``example`` into ``directory``, check both against PyTorch and report the differences.

    Dynamic axes are tried first (batch and length, then batch only) and kept only if both
    programs also agree at another shape along them; otherwise the stated shape is fixed.
    Raises ``ValueError`` when ONNX or the program disagrees by more than ``ONNX_TOLERANCE``."""
    model, directory = model.cpu().eval(), Path(directory)
    name = next(iter(inspect.signature(model.forward).parameters))  # the input's name

    def write(axes: Mapping[int, str]) -> PortableReport:
        def inputs_at(other: tuple[int, ...] | None) -> list[Inputs]:
            return [{name: example}] + ([{name: _random_like(example, other)}] if other else [])

        done = export_checked(model, {name: example}, directory / ONNX_FILE, axes, inputs_at)
        return _with_pt2(model, done, directory / PT2_FILE, example)

    report, notes = first_that_works(axis_attempts(example, dynamic), write)
    report.notes = notes + report.notes
    return report


def _with_pt2(model: nn.Module, done: Checked, path: Path, example: torch.Tensor) -> PortableReport:
    """Save the checked program as ``model.pt2``, compare it with PyTorch and report both."""
    torch.export.save(done.program, path)
    with torch.no_grad():
        module = done.program.module()
        pt2 = max(
            float((module(*x.values()) - model(*x.values())).abs().max()) for x in done.checks
        )
    if not pt2 <= ONNX_TOLERANCE:
        raise ValueError(f"torch.export program disagrees with PyTorch: max abs diff {pt2:.3g}")
    return PortableReport(
        tuple(example.shape),
        str(example.dtype).removeprefix("torch."),
        done.dynamic_axes,
        pt2,
        done.onnx_max_abs_diff,
        done.onnx_opset,
        done.checked_shapes,
        done.notes,
    )
