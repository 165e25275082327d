"""Normalisation layers: LayerNorm, RMSNorm, Pre-CRMSNorm and BatchNorm over tokens."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops.base import Operator
from search_spaces.registry import register_op


class Norm(Operator):
    """Base of the norms: FLOPs are ``flops_per_element * L * dim`` (stated per class)."""

    flops_per_element: ClassVar[int]

    def __init__(self, dim: int, *, causal: bool = False, eps: float) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"`eps >= 0` must hold, but got {eps=}")
        self.dim, self.causal, self.eps = dim, causal, eps

    def flops(self, seq_len: int) -> int:
        return self.flops_per_element * seq_len * self.dim

    def counted_flops(self, seq_len: int) -> int:
        return 0  # elementwise work only: the flop counter sees none of it


@register_op("layernorm", kind="norm")
class LayerNorm(Norm):
    """LayerNorm (Ba et al. 2016), ``nn.LayerNorm``. FLOPs: mean 1, centre 1, square-sum 2,
    scale 1, affine 2 per element = 7."""

    flops_per_element = 7

    def __init__(self, dim: int, *, causal: bool = False, eps: float = 1e-5) -> None:
        super().__init__(dim, causal=causal, eps=eps)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x)


@register_op("rmsnorm", kind="norm")
class RmsNorm(Norm):
    """RMSNorm (Zhang & Sennrich 2019), ``nn.RMSNorm``: ``γ ⊙ x / sqrt(mean(x²) + eps)``.
    FLOPs: square-sum 2, scale 1, weight 1 per element = 4."""

    flops_per_element = 4

    def __init__(self, dim: int, *, causal: bool = False, eps: float = 1e-6) -> None:
        super().__init__(dim, causal=causal, eps=eps)
        self.norm = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x)


@register_op("crmsnorm", kind="norm")
class CRmsNorm(Norm):
    """Pre-CRMSNorm (Jiang et al. 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers").

    The ``dim`` inputs are the first ``dim`` coordinates of a zero-mean ``(dim + 1)``-vector
    (the last one is ``-Σx``), so RMSNorm of that vector, restricted to ``x``, is
    ``γ ⊙ x / sqrt((‖x‖² + (Σx)²) / (dim + 1) + eps)``: LayerNorm's function at width
    ``dim + 1`` with one fewer stored channel. No library provides it, so it is written here.
    FLOPs: square-sum 2, sum 1, scale 1, weight 1 per element = 5.
    """

    flops_per_element = 5

    def __init__(self, dim: int, *, causal: bool = False, eps: float = 1e-6) -> None:
        super().__init__(dim, causal=causal, eps=eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        sq = x.square().sum(-1, keepdim=True) + x.sum(-1, keepdim=True).square()  # (B, L, 1)
        return self.weight * x * torch.rsqrt(sq / (self.dim + 1) + self.eps)


@register_op("batchnorm", kind="norm")
class BatchNorm(Norm):
    """BatchNorm over tokens (the SLAB direction, Guo et al. 2024; plain BN, without SLAB's
    progressive LN->BN schedule).

    Statistics of each channel are taken over every real (batch, position) token: with a padding
    mask, ``nn.BatchNorm1d`` runs on ``x[padding_mask]`` and the result is scattered back (padded
    outputs are 0), so padded tokens change neither the outputs nor the running statistics. In
    training a token's output depends on every other token, later ones included, hence no causal
    form. With fewer than two real tokens in training the batch variance is undefined, so the
    running statistics are used (and left unchanged). FLOPs: 2 per element (scale and shift; the
    statistics in training add about 4 more, not counted).
    """

    supports_causal = False
    flops_per_element = 2

    def __init__(
        self, dim: int, *, causal: bool = False, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        if causal:
            raise ValueError(
                "batchnorm cannot be causal (got causal=True): in training its statistics mix "
                "all positions, so an output would depend on later tokens"
            )
        super().__init__(dim, causal=causal, eps=eps)
        self.norm = nn.BatchNorm1d(dim, eps=eps, momentum=momentum)

    def _normalise(self, tokens: torch.Tensor) -> torch.Tensor:
        """BatchNorm of ``tokens`` (N, D)."""
        if self.training and tokens.shape[0] < 2:
            bn = self.norm
            return F.batch_norm(
                tokens, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
            )
        return self.norm(tokens)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is None:
            return self._normalise(x.reshape(-1, self.dim)).view_as(x)  # (B, L, D)
        y = x.new_zeros(x.shape)
        y[padding_mask] = self._normalise(x[padding_mask])  # (N_real, D) scattered back
        return y
