"""ONNX of a (grafted) Hugging Face model: its forward on ``input_ids`` + ``attention_mask``,
returning an encoder's ``last_hidden_state`` or a decoder's ``logits``, traced with
``torch.export`` at a stated ``(batch, length)`` and checked against PyTorch with onnxruntime.

Tracing, dynamic axes (batch and length, then batch only, then neither), the ONNX translation
and the check are ``common.portable``'s; this module adds the two-input forward and its inputs:
onnxruntime is compared with PyTorch at real tokens only, with and without padding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.portable import Inputs, axis_attempts, export_checked, first_line, first_that_works


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
    when even the fixed-shape export fails or disagrees by more than
    ``common.portable.ONNX_TOLERANCE``."""
    wrapper = HFForward(model.cpu().eval(), causal).eval()
    shape = tuple(shape)
    example = make_inputs(shape, vocab_size, seed)

    def inputs_at(other: tuple[int, ...] | None) -> list[Inputs]:
        checks = [example, make_inputs(shape, vocab_size, seed + 1, shape[1] // 4)]
        return checks + ([make_inputs(other, vocab_size, seed + 2, other[1] // 4)] if other else [])

    def write(axes: Mapping[int, str]) -> OnnxReport:
        done = export_checked(wrapper, example, Path(path), axes, inputs_at, mask="attention_mask")
        return OnnxReport(
            shape,
            wrapper.output,
            done.dynamic_axes,
            done.ranges,
            done.onnx_max_abs_diff,
            done.onnx_opset,
            done.checked_shapes,
            done.notes,
        )

    try:
        report, notes = first_that_works(axis_attempts(example["input_ids"], dynamic), write)
    except Exception as e:  # noqa: BLE001  (exporters raise many types)
        raise ValueError(f"ONNX export failed at shape {list(shape)}: {first_line(e)}") from None
    report.notes = notes + report.notes
    return report
