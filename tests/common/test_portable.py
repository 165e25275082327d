"""The shared ONNX path: window sums through ``avg_pool2d(divisor_override=1)`` (which
onnxscript's own translation turns into averages), comparison at real tokens only, dynamic axes
kept where the model allows, and the fall back from one set of axes to the next."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.portable import (
    ONNX_TOLERANCE,
    axis_attempts,
    export_checked,
    first_that_works,
    onnx_max_abs_diff,
)


class WindowSum(nn.Module):
    """Embeds token ids and sums each causal window of 3 over the real tokens (as ``pooling``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * attention_mask.unsqueeze(-1)  # (B, L, D)
        x = F.pad(x.transpose(1, 2).unsqueeze(2), (2, 0))  # (B, D, 1, L + 2)
        return F.avg_pool2d(x, (1, 3), stride=1, divisor_override=1).squeeze(2).transpose(1, 2)


def _inputs(shape: tuple[int, ...], seed: int, pad: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[-1, shape[1] - pad :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_window_sum_exports_with_dynamic_axes(tmp_path) -> None:
    model, example = WindowSum().eval(), _inputs((1, 12), 0)
    seen = []

    def inputs_at(other):
        seen.append(other)
        return [example, _inputs((1, 12), 1, pad=3)] + ([_inputs(other, 2, pad=2)] if other else [])

    axes = axis_attempts(example["input_ids"])[0]
    done = export_checked(
        model, example, tmp_path / "m.onnx", axes, inputs_at, mask="attention_mask"
    )
    assert done.dynamic_axes == {0: "batch", 1: "length"} and seen == [(2, 11)]
    assert done.checked_shapes == [(1, 12), (1, 12), (2, 11)]
    assert done.onnx_max_abs_diff <= ONNX_TOLERANCE and done.notes == []
    # an independent draw at yet another shape, with padding
    assert (
        onnx_max_abs_diff(tmp_path / "m.onnx", model, [_inputs((3, 7), 5, pad=4)], "attention_mask")
        <= ONNX_TOLERANCE
    )


def test_axis_attempts_end_with_the_stated_shape() -> None:
    assert axis_attempts(torch.zeros(1, 8, dtype=torch.long)) == [
        {0: "batch", 1: "length"},
        {0: "batch"},
        {},
    ]
    assert axis_attempts(torch.zeros(1, 3, 4, 4)) == [{0: "batch"}, {}]
    assert axis_attempts(torch.zeros(1, 8, dtype=torch.long), dynamic=False) == [{}]


def test_failed_attempts_become_notes_and_the_last_one_raises() -> None:
    def write(axes):
        if axes:
            raise RuntimeError(f"cannot keep {sorted(axes)}\nsecond line")
        return "fixed"

    result, notes = first_that_works([{0: "batch", 1: "length"}, {0: "batch"}, {}], write)
    assert result == "fixed"
    assert notes == [
        "dynamic batch+length failed (RuntimeError: cannot keep [0, 1])",
        "dynamic batch failed (RuntimeError: cannot keep [0])",
    ]
    with pytest.raises(RuntimeError, match="cannot keep"):
        first_that_works([{0: "batch"}], write)
