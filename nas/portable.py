"""Portable programs of a model: a ``torch.export`` program (``model.pt2``, runs with plain
PyTorch) and an ONNX model (``model.onnx``) checked against PyTorch with onnxruntime.

Both are traced at a stated input shape. The batch axis (and the length axis of token inputs)
is left dynamic where the operators allow: the model is traced with ``Dim.AUTO`` on those axes
and torch.export keeps every axis that no operator specialises; if tracing with dynamic axes
fails, or pins an axis to a value other than the stated one, the program is traced again with
the stated shape only. ``padding_mask`` is not an input of the exported programs (all tokens real).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim, ExportedProgram

ONNX_FILE, PT2_FILE = "model.onnx", "model.pt2"
ONNX_TOLERANCE = 1e-4


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


def _avg_pool2d(self, kernel_size, stride=(), padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None):  # fmt: skip
    """ONNX for ``aten.avg_pool2d`` honouring ``divisor_override`` (onnxscript's translation
    ignores it, so a window *sum* such as the pooling mixer's would come out as an average).
    Exact when every window lies inside the (explicitly padded) input, as in ``pooling``."""
    from onnxscript.function_libs.torch_lib.ops.nn import aten_avg_pool2d
    from onnxscript.onnx_opset import opset18 as op

    out = aten_avg_pool2d(self, kernel_size, stride, padding, ceil_mode, count_include_pad)
    if divisor_override is None:
        return out
    if ceil_mode or (any(padding) and not count_include_pad):
        raise NotImplementedError("avg_pool2d: divisor_override with partial windows")
    kh, kw = (list(kernel_size) * 2)[:2] if len(kernel_size) == 1 else kernel_size
    return op.Mul(out, op.CastLike(kh * kw / divisor_override, out))


def _dynamic_candidates(example: torch.Tensor) -> dict[int, str]:
    """Axes that may be dynamic: the batch, and the length of token-id inputs."""
    if example.dtype in (torch.int32, torch.int64) and example.dim() == 2:
        return {0: "batch", 1: "length"}
    return {0: "batch"}


def export_program(
    model: nn.Module, example: torch.Tensor, axes: dict[int, str] | None = None
) -> tuple[ExportedProgram, dict[int, str]]:
    """``torch.export`` of ``model`` (eval mode) on inputs shaped like ``example`` with ``axes``
    traced as dynamic: the program and the axes it keeps dynamic. Raises ``ValueError`` when
    the operators pin one of ``axes`` to a value other than ``example``'s."""
    model = model.eval()
    if not axes:
        return torch.export.export(model, (example,)), {}
    # trace with batch >= 2: torch.export specialises axes of size 0 or 1
    trace = example.repeat(2, *[1] * (example.dim() - 1)) if example.shape[0] == 1 else example
    dims = {axis: Dim.AUTO for axis in axes}
    program = torch.export.export(model, (trace,), dynamic_shapes={"inputs": dims})
    shape = _input_shape(program)
    kept = {a: n for a, n in axes.items() if not isinstance(shape[a], int)}
    pinned = [a for a in axes if a not in kept and shape[a] != example.shape[a]]
    if pinned:
        raise ValueError(f"the operators fix axes {pinned} of the input")
    return program, kept


def _input_shape(program: ExportedProgram) -> list[int | torch.SymInt]:
    user_inputs = set(program.graph_signature.user_inputs)
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs)
    return [d.node.maybe_as_int() if isinstance(d, torch.SymInt) and d.node.maybe_as_int() is not None else d for d in node.meta["val"].shape]  # fmt: skip


def _other_shape(example: torch.Tensor, dynamic_axes: dict[int, str]) -> torch.Tensor | None:
    """An input of another shape along the dynamic axes (batch + 1, length - 1), to check them."""
    if not dynamic_axes:
        return None
    shape = list(example.shape)
    if 0 in dynamic_axes:
        shape[0] += 1
    if 1 in dynamic_axes and shape[1] > 2:
        shape[1] -= 1
    if example.dtype.is_floating_point:
        return torch.randn(shape, generator=torch.Generator().manual_seed(1))
    high = int(example.max()) + 1
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(1))


def onnx_max_abs_diff(path: str | os.PathLike, model: nn.Module, inputs: list[torch.Tensor]) -> float:  # fmt: skip
    """Largest absolute difference between onnxruntime and PyTorch outputs over ``inputs``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            (got,) = session.run(None, {name: x.numpy()})
            worst = max(worst, float(np.abs(got - model(x).float().numpy()).max()))
    return worst


def write_portable(
    model: nn.Module, example: torch.Tensor, directory: str | os.PathLike, *, dynamic: bool = True
) -> PortableReport:
    """Write ``model.pt2`` and ``model.onnx`` of ``model`` (on CPU, eval mode) for inputs shaped
    like ``example`` into ``directory``, check both against PyTorch and report the differences.

    Dynamic axes are tried first (batch and length, then batch only) and kept only if both
    programs also agree at another shape along them; otherwise the stated shape is fixed.
    Raises ``ValueError`` when ONNX disagrees by more than ``ONNX_TOLERANCE``."""
    model, directory = model.cpu().eval(), Path(directory)
    candidates = _dynamic_candidates(example) if dynamic else {}
    attempts = [candidates, {0: "batch"}] if len(candidates) > 1 else [candidates]
    notes = []
    for axes in attempts:
        try:
            report = _write(model, example, directory, axes)
        except Exception as e:  # noqa: BLE001  (an exporter limit on dynamic shapes)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            notes.append(f"dynamic {sorted(axes.values())} failed ({type(e).__name__}: {first})")
            continue
        report.notes = notes + report.notes
        return report
    report = _write(model, example, directory, {})
    report.notes = notes
    return report


def _write(model: nn.Module, example: torch.Tensor, directory: Path, axes: dict[int, str]) -> PortableReport:  # fmt: skip
    report = PortableReport(tuple(example.shape), str(example.dtype).removeprefix("torch."))
    program, report.dynamic_axes = export_program(model, example, axes)
    if len(report.dynamic_axes) < len(axes):
        report.notes.append(f"static axes (fixed by the operators): {sorted(set(axes) - set(report.dynamic_axes))}")  # fmt: skip
    checks = [example] + [x for x in [_other_shape(example, report.dynamic_axes)] if x is not None]
    torch.export.save(program, directory / PT2_FILE)
    with torch.no_grad():
        module = program.module()
        report.pt2_max_abs_diff = max(float((module(x) - model(x)).abs().max()) for x in checks)
    onnx_program = torch.onnx.export(
        program, dynamo=True, verbose=False, custom_translation_table={torch.ops.aten.avg_pool2d.default: _avg_pool2d}
    )  # fmt: skip
    onnx_program.save(str(directory / ONNX_FILE))
    report.onnx_opset = onnx_program.model.opset_imports.get("")
    report.onnx_checked_shapes = [tuple(x.shape) for x in checks]
    report.onnx_max_abs_diff = onnx_max_abs_diff(directory / ONNX_FILE, model, checks)
    if not report.onnx_max_abs_diff <= ONNX_TOLERANCE:
        raise ValueError(
            f"ONNX export disagrees with PyTorch: max abs diff {report.onnx_max_abs_diff:.3g} > "
            f"{ONNX_TOLERANCE} at shapes {report.onnx_checked_shapes}"
        )
    if not report.pt2_max_abs_diff <= ONNX_TOLERANCE:
        raise ValueError(f"torch.export program disagrees with PyTorch: max abs diff {report.pt2_max_abs_diff:.3g}")  # fmt: skip
    return report
