"""Portable programs of a model, checked against PyTorch: ``torch.export`` tracing with dynamic
axes, the fall back to the stated shape, the ONNX translation and the onnxruntime check.

A model's inputs are a dict of tensors named by its ``forward``'s parameters, in order (one
``inputs`` tensor for the search space's models, ``input_ids`` + ``attention_mask`` for Hugging
Face ones); the first input decides the axes. Axes are tried dynamic in the order of
``axis_attempts`` (batch and length of token ids, then batch only, then none): each attempt is
traced with ``Dim.AUTO`` on its axes, torch.export keeps every axis no operator specialises, and
the attempt is kept only if onnxruntime agrees with PyTorch (within ``ONNX_TOLERANCE``) at the
stated shape and at another shape along the kept axes (``other_shape``). Some operators compute
sizes from the traced length in ways torch.export does not always guard, so a program marked
dynamic can still fail at another length. ``nas.portable`` (which also writes ``model.pt2``) and
``grafting.portable`` build on this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.export import Dim, ExportedProgram

ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4
Inputs = dict[str, torch.Tensor]  # forward's parameter name -> tensor, in the forward's order
R = TypeVar("R")


def _avg_pool2d(
    self,
    kernel_size,
    stride=(),
    padding=(0, 0),
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
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


# every ONNX export of the platform goes through these translations (``export_onnx``)
ONNX_TRANSLATIONS = {torch.ops.aten.avg_pool2d.default: _avg_pool2d}


def axis_attempts(example: torch.Tensor, dynamic: bool = True) -> list[dict[int, str]]:
    """The axes to trace dynamic, in the order tried, ending with none (the stated shape):
    batch and length of token ids (an integer 2-D input), then batch only; batch for others."""
    if not dynamic:
        return [{}]
    if example.dtype in (torch.int32, torch.int64) and example.dim() == 2:
        return [{0: "batch", 1: "length"}, {0: "batch"}, {}]
    return [{0: "batch"}, {}]


def export_program(
    model: nn.Module, example: Inputs, axes: Mapping[int, str]
) -> tuple[ExportedProgram, dict[int, str], dict[str, list[int | None]]]:
    """``torch.export`` of ``model`` on inputs shaped like ``example`` with ``axes`` (of every
    input) traced dynamic: the program, the axes it keeps dynamic and their value ranges
    (name -> [min, max], None when unbounded). Raises ``ValueError`` when the operators pin
    one of ``axes`` to a value other than the stated one."""
    if not axes:
        return torch.export.export(model, tuple(example.values())), {}, {}
    trace = example
    if next(iter(example.values())).shape[0] == 1:  # torch.export specialises axes of size 0 or 1
        trace = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in example.items()}
    dims = {name: {axis: Dim.AUTO for axis in axes} for name in example}
    program = torch.export.export(model, tuple(trace.values()), dynamic_shapes=dims)
    shape = _input_shape(program)
    kept = {a: n for a, n in axes.items() if not isinstance(shape[a], int)}
    stated = next(iter(example.values())).shape
    pinned = [n for a, n in axes.items() if a not in kept and shape[a] != stated[a]]
    if pinned:
        raise ValueError(f"the operators fix the {'/'.join(pinned)} axis to another size")
    ranges = {}
    for axis, name in kept.items():
        r = program.range_constraints.get(shape[axis].node.expr)
        lo, hi = (_bound(r.lower), _bound(r.upper)) if r is not None else (None, None)
        # torch.export's lower bound (2) reflects its size-1 specialisation, not the program:
        # the stated size is checked too
        ranges[name] = [stated[axis] if lo is None else min(lo, stated[axis]), hi]
    return program, kept, ranges


def _bound(value: Any) -> int | None:
    """A range bound as an int, None when unbounded (torch's ``int_oo`` has no ``int()``)."""
    try:
        return int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _input_shape(program: ExportedProgram) -> list[int | torch.SymInt]:
    """The first user input's shape in ``program``: ints where static, SymInts where dynamic."""
    user = set(program.graph_signature.user_inputs)
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
    return [
        d.node.maybe_as_int()
        if isinstance(d, torch.SymInt) and d.node.maybe_as_int() is not None
        else d
        for d in node.meta["val"].shape
    ]


def other_shape(
    shape: Sequence[int], dynamic: Mapping[int, str], ranges: Mapping[str, list]
) -> tuple[int, ...]:
    """Another shape along the dynamic axes to check them: batch + 1, length - 1 (in range)."""
    out = list(shape)
    if 0 in dynamic:
        out[0] += 1
    if 1 in dynamic:
        lo = ranges.get(dynamic[1], [None])[0] or 2
        if out[1] - 1 >= lo:
            out[1] -= 1
    return tuple(out)


def export_onnx(
    model: nn.Module | ExportedProgram, path: str | os.PathLike, args: tuple = ()
) -> int | None:
    """Write the ONNX model of ``model`` (a program, or a module traced on ``args``) to ``path``
    with the platform's translations (``ONNX_TRANSLATIONS``); returns its opset."""
    onnx_program = torch.onnx.export(
        model, args, dynamo=True, verbose=False, custom_translation_table=ONNX_TRANSLATIONS
    )
    onnx_program.save(str(path))
    return onnx_program.model.opset_imports.get("")


def onnx_max_abs_diff(
    path: str | os.PathLike, model: nn.Module, checks: Sequence[Inputs], mask: str | None = None
) -> float:
    """Largest absolute difference between onnxruntime and ``model`` over ``checks``; with
    ``mask`` (an input's name) only at positions where that input is nonzero (real tokens)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]  # an unused input may be dropped
    worst = 0.0
    with torch.no_grad():
        for x in checks:
            (got,) = session.run(None, {k: x[k].numpy() for k in names})
            want = model(*x.values()).float().numpy()
            if mask is not None:
                real = x[mask].numpy().astype(bool)
                got, want = got[real], want[real]
            worst = max(worst, float(np.abs(got - want).max()))
    return worst


@dataclass
class Checked:
    """One export that passed the onnxruntime check."""

    program: ExportedProgram
    checks: list[Inputs]  # the inputs ONNX was checked on
    dynamic_axes: dict[int, str] = field(default_factory=dict)  # axis -> name, kept dynamic
    ranges: dict[str, list[int | None]] = field(default_factory=dict)  # name -> [min, max]
    onnx_opset: int | None = None
    onnx_max_abs_diff: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def checked_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(next(iter(x.values())).shape) for x in self.checks]


def export_checked(
    model: nn.Module,
    example: Inputs,
    path: str | os.PathLike,
    axes: Mapping[int, str],
    inputs_at: Callable[[tuple[int, ...] | None], list[Inputs]],
    *,
    mask: str | None = None,
) -> Checked:
    """Trace ``model`` (eval mode) on ``example`` with ``axes`` dynamic, write its ONNX model to
    ``path`` and check it with onnxruntime on ``inputs_at(other)``: the inputs to check, given
    another shape along the kept axes (None when there is none). ``ValueError`` when
    onnxruntime disagrees by more than ``ONNX_TOLERANCE``."""
    with torch.no_grad():
        program, kept, ranges = export_program(model, example, axes)
    done = Checked(program, [], kept, ranges)
    if len(kept) < len(axes):
        fixed = sorted(set(axes.values()) - set(kept.values()))
        done.notes.append(f"static axes (fixed by the operators): {fixed}")
    stated = tuple(next(iter(example.values())).shape)
    other = other_shape(stated, kept, ranges)
    done.checks = inputs_at(other if other != stated else None)
    done.onnx_opset = export_onnx(program, path)
    done.onnx_max_abs_diff = onnx_max_abs_diff(path, model, done.checks, mask)
    if not done.onnx_max_abs_diff <= ONNX_TOLERANCE:
        raise ValueError(
            f"onnxruntime disagrees with PyTorch: max abs diff {done.onnx_max_abs_diff:.3g} > "
            f"{ONNX_TOLERANCE} at shapes {done.checked_shapes}"
        )
    return done


def first_that_works(
    attempts: Sequence[Mapping[int, str]], write: Callable[[Mapping[int, str]], R]
) -> tuple[R, list[str]]:
    """``write(axes)`` for each of ``attempts`` in turn until one returns: its result and a note
    per dynamic attempt that failed. The last attempt's exception propagates."""
    notes = []
    for axes in attempts[:-1]:
        try:
            return write(axes), notes
        except Exception as e:  # noqa: BLE001  (exporters raise many types)
            notes.append(f"dynamic {'+'.join(axes.values())} failed ({first_line(e)})")
    return write(attempts[-1]), notes


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line reports."""
    text = str(e).strip()
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
