"""The dropped token mixer."""

from __future__ import annotations

import torch

from search_spaces.ops.base import Operator
from search_spaces.registry import register_op


@register_op("identity", kind="mixer")
class Identity(Operator):
    """No token mixing: the mixer sub-layer is dropped (He et al. 2024, "What Matters in
    Transformers? Not All Attention is Needed").

    ``forward`` returns zeros, not ``x``: a mixer sits on a residual branch (``x + mixer(...)``),
    so a zero branch makes the pre-norm sub-layer the identity map ``x -> x`` (post-norm: just the
    norm), which is what dropping the attention layer means; returning ``x`` would instead double
    the residual stream. Computed as ``x * 0`` (equal to ``zeros_like(x)`` for finite ``x``) so
    the output stays on the autograd graph and a standalone backward reaches ``x`` with a zero
    gradient; where ``x`` is not finite the residual ``x + 0`` is not finite anyway.
    No parameters; FLOPs 0 (the multiply by zero is not counted).
    """

    def __init__(self, dim: int, *, causal: bool = False) -> None:
        super().__init__()
        self.dim, self.causal = dim, causal

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x * 0

    def flops(self, seq_len: int) -> int:
        return 0
