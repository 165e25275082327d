"""The operator contract and small helpers shared by every operator family.

Contract (every registered operator):
- constructor ``(dim, *, causal=False, <hparams>)``; model-wide values (``head_dim``, ``grid``,
  ``max_len``) are keyword arguments that ``build_model`` passes only to operators that take them;
- ``forward(x, *, padding_mask=None)`` maps ``(B, L, D)`` to ``(B, L, D)``; ``padding_mask`` is
  ``(B, L)`` bool with True at real tokens; a padded position contributes nothing to any other
  position (its own output is unspecified but finite);
- ``flops(seq_len)``: analytic forward FLOPs for one sequence (a multiply-add counts 2), counting
  what the implementation computes and respecting causality.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class Operator(nn.Module, abc.ABC):
    """Base class of every registered operator; see the module docstring for the contract."""

    op_name: str
    op_kind: str
    supports_causal: bool = True

    @abc.abstractmethod
    def flops(self, seq_len: int) -> int:
        """Analytic forward FLOPs for one sequence of ``seq_len`` tokens."""

    def fused_segments(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Parameters that concatenate several tensors along one axis: ``{name: (axis, sizes)}``.

        Weight sharing takes a smaller operator's weights as the leading slice of a larger one's;
        a fused parameter (e.g. one ``in_proj`` producing z, x, B, C) is sliced per segment
        instead. Operators without fused parameters keep this default."""
        return {}


def zero_padded(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` (B, L, ...) with the positions where ``padding_mask`` is False set to zero."""
    if padding_mask is None:
        return x
    shape = padding_mask.shape + (1,) * (x.dim() - padding_mask.dim())
    return x * padding_mask.reshape(shape).to(x.dtype)


def linear_flops(in_features: int, out_features: int, tokens: int, bias: bool = False) -> int:
    """FLOPs of ``nn.Linear`` applied to ``tokens`` rows (bias adds are not counted)."""
    return 2 * in_features * out_features * tokens


def causal_pairs(seq_len: int) -> int:
    """Number of (query, key) pairs with key <= query: L (L + 1) / 2."""
    return seq_len * (seq_len + 1) // 2
