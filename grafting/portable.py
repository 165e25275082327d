"""ONNX of a (grafted) Hugging Face model: its forward on ``input_ids`` + ``attention_mask``,
returning an encoder's ``last_hidden_state`` or a decoder's ``logits``, traced with
``torch.export`` at a stated ``(batch, length)`` and checked against PyTorch with onnxruntime.

The batch and length axes are tried dynamic first, then the batch axis only, then neither. An
attempt is kept only if onnxruntime agrees with PyTorch (within ``ONNX_TOLERANCE``, at real
tokens) at the stated shape and at another shape along its dynamic axes: some operators compute
block counts from the traced length in ways torch.export does not always guard, so a program
marked dynamic can still fail at another length. ``nas/portable.py`` does the same for the
search space's one-tensor models; its helpers take a single input, and ``grafting`` never
imports ``nas``, hence this module.
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

ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4
INPUTS = ("input_ids", "attention_mask")
Inputs = dict[str, torch.Tensor]


class HFForward(nn.Module):
    """``model(input_ids, attention_mask)`` as one tensor, without a cache: ``logits`` (B, L, V)
    of a causal LM, ``last_hidden_state`` (B, L, D) of an encoder."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.model, self.causal = model, causal
        self.output = "logits" if causal else "last_hidden_state"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kw = {"use_cache": False} if self.causal else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kw)
        return getattr(out, self.output)


@dataclass
class OnnxReport:
    """What was exported and how well onnxruntime agrees with PyTorch."""

    shape: tuple[int, int]  # the stated (batch, length)
    output: str  # logits | last_hidden_state
    dynamic_axes: dict[int, str] = field(default_factory=dict)  # axis -> name, kept dynamic
    ranges: dict[str, list[int | None]] = field(default_factory=dict)  # name -> [min, max]
    onnx_max_abs_diff: float = float("nan")  # over real tokens of every checked input
    onnx_opset: int | None = None
    checked_shapes: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_inputs(shape: tuple[int, int], vocab_size: int, seed: int, pad: int = 0) -> Inputs:
    """Random token ids of ``shape`` and a mask whose last row ends in ``pad`` padding tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, shape, generator=g)
    mask = torch.ones_like(ids)
    if pad:
        mask[-1, shape[1] - pad :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def export_program(
    wrapper: nn.Module, example: Inputs, axes: dict[int, str]
) -> tuple[ExportedProgram, dict[int, str], dict[str, list[int | None]]]:
    """``torch.export`` of ``wrapper`` with ``axes`` of both inputs traced dynamic: the program,
    the axes it keeps dynamic and their value ranges. Raises ``ValueError`` when the operators
    pin an axis to a value other than the stated one."""
    if not axes:
        return torch.export.export(wrapper, (), dict(example)), {}, {}
    trace = dict(example)
    if example["input_ids"].shape[0] == 1:  # torch.export specialises axes of size 0 or 1
        trace = {k: v.repeat(2, 1) for k, v in example.items()}
    dims = {name: {axis: Dim.AUTO for axis in axes} for name in INPUTS}
    program = torch.export.export(wrapper, (), trace, dynamic_shapes=dims)
    shape = _input_shape(program)
    kept = {a: n for a, n in axes.items() if not isinstance(shape[a], int)}
    stated = example["input_ids"].shape
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
    user = set(program.graph_signature.user_inputs)
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
    return [
        d.node.maybe_as_int() if isinstance(d, torch.SymInt) and d.node.maybe_as_int() is not None else d
        for d in node.meta["val"].shape
    ]  # fmt: skip


def other_shape(shape: tuple[int, int], dynamic: dict[int, str], ranges: dict) -> tuple[int, int]:
    """Another shape along the dynamic axes to check them: batch + 1, length - 1 (in range)."""
    b, n = shape
    if 0 in dynamic:
        b += 1
    lo = (ranges.get(dynamic.get(1, ""), [None])[0] or 2) if 1 in dynamic else n
    if 1 in dynamic and n - 1 >= lo:
        n -= 1
    return b, n


def onnx_max_abs_diff(path: str | os.PathLike, wrapper: nn.Module, checks: list[Inputs]) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over the real tokens (mask 1)
    of every input in ``checks``; outputs at padding positions are not compared."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]  # an unused input may be dropped
    worst = 0.0
    with torch.no_grad():
        for x in checks:
            (got,) = session.run(None, {k: x[k].numpy() for k in names})
            want = wrapper(**x).float().numpy()
            real = x["attention_mask"].numpy().astype(bool)
            worst = max(worst, float(np.abs(got[real] - want[real]).max()))
    return worst


def write_onnx(
    model: nn.Module,
    causal: bool,
    path: str | os.PathLike,
    *,
    shape: tuple[int, int],
    vocab_size: int,
    dynamic: bool = True,
    seed: int = 0,
) -> OnnxReport:
    """Write the ONNX model of ``model`` (moved to CPU, eval mode) to ``path`` and check it.

    Dynamic attempts that fail (exporter limit, or disagreement at another shape) are noted in
    the report and the next attempt is made; raises ``ValueError`` with the exporter's reason
    when even the fixed-shape export fails or disagrees by more than ``ONNX_TOLERANCE``."""
    wrapper = HFForward(model.cpu().eval(), causal).eval()
    attempts: list[dict[int, str]] = [{0: "batch", 1: "length"}, {0: "batch"}] if dynamic else []
    attempts.append({})
    notes = []
    for axes in attempts:
        try:
            report = _write(wrapper, Path(path), tuple(shape), vocab_size, seed, axes)
        except Exception as e:  # noqa: BLE001  (exporters raise many types)
            reason = _first_line(e)
            if not axes:
                raise ValueError(f"ONNX export failed at shape {list(shape)}: {reason}") from None
            notes.append(f"dynamic {'+'.join(axes.values())} failed ({reason})")
            continue
        report.notes = notes + report.notes
        return report
    raise AssertionError("unreachable: the fixed-shape attempt returns or raises")


def _write(
    wrapper: HFForward,
    path: Path,
    shape: tuple[int, int],
    vocab_size: int,
    seed: int,
    axes: dict[int, str],
) -> OnnxReport:
    pad = shape[1] // 4
    example = make_inputs(shape, vocab_size, seed)
    report = OnnxReport(shape, wrapper.output)
    with torch.no_grad():
        program, report.dynamic_axes, report.ranges = export_program(wrapper, example, axes)
    if len(report.dynamic_axes) < len(axes):
        fixed = sorted(set(axes.values()) - set(report.dynamic_axes.values()))
        report.notes.append(f"static axes (fixed by the operators): {fixed}")
    checks = [example, make_inputs(shape, vocab_size, seed + 1, pad)]
    other = other_shape(shape, report.dynamic_axes, report.ranges)
    if other != shape:
        checks.append(make_inputs(other, vocab_size, seed + 2, other[1] // 4))
    onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
    onnx_program.save(str(path))
    report.onnx_opset = onnx_program.model.opset_imports.get("")
    report.checked_shapes = [tuple(x["input_ids"].shape) for x in checks]
    report.onnx_max_abs_diff = onnx_max_abs_diff(path, wrapper, checks)
    if not report.onnx_max_abs_diff <= ONNX_TOLERANCE:
        raise ValueError(
            f"onnxruntime disagrees with PyTorch: max abs diff {report.onnx_max_abs_diff:.3g} > "
            f"{ONNX_TOLERANCE} at shapes {report.checked_shapes}"
        )
    return report


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
