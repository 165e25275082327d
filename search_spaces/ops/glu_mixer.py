"""Gated token-mixing MLP: the spatial gating unit of gMLP."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.ops.base import Operator, linear_flops, zero_padded
from search_spaces.registry import register_op


@register_op("glu_mixer", kind="mixer")
class GluMixer(Operator):
    """Spatial gating unit of gMLP (Liu et al. 2021, "Pay Attention to MLPs").

    Attention replaced by a GLU-gated MLP over positions, as in the Activator direction:
    ``u, z = split(GELU(x W_in))`` (each ``hidden = int(ratio * dim)`` wide),
    ``out = (u ⊙ (W[:L, :L] LayerNorm(z) + b[:L])) W_out``, where ``W`` (``max_len x max_len``)
    mixes positions and is lower-triangular in effect when causal. ``W`` starts near zero and
    ``b`` at one (gMLP's init), so the unit starts close to ``u``. Padded positions get ``z = 0``
    and so contribute nothing. Sequences longer than ``max_len`` are refused.
    """

    def __init__(
        self, dim: int, *, causal: bool = False, ratio: float = 1.0, max_len: int = 512
    ) -> None:
        super().__init__()
        hidden = int(ratio * dim)
        if hidden < 1:
            raise ValueError(f"`int(ratio * dim) >= 1` must hold, but got {ratio=}, {dim=}")
        if max_len < 1:
            raise ValueError(f"`max_len >= 1` must hold, but got {max_len=}")
        self.dim, self.causal, self.hidden, self.max_len = dim, causal, hidden, max_len
        self.in_proj = nn.Linear(dim, 2 * hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden)
        self.spatial_weight = nn.Parameter(torch.empty(max_len, max_len))
        self.spatial_bias = nn.Parameter(torch.ones(max_len))
        self.out_proj = nn.Linear(hidden, dim)
        eps = 1e-3 / max_len  # near-zero W as in gMLP's reference code
        nn.init.uniform_(self.spatial_weight, -eps, eps)
        # torch.tril keeps everything when diagonal >= L: one code path for both modes.
        self._diagonal = 0 if causal else max_len

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[1]
        if L > self.max_len:
            raise ValueError(
                f"`seq_len <= max_len` must hold for glu_mixer, but got seq_len={L}, "
                f"max_len={self.max_len}"
            )
        u, z = self.act(self.in_proj(x)).chunk(2, dim=-1)  # (B, L, hidden) x 2
        z = zero_padded(self.norm(z), padding_mask)
        w = torch.tril(self.spatial_weight[:L, :L], diagonal=self._diagonal)  # (L, L)
        v = w @ z + self.spatial_bias[:L, None]  # (B, L, hidden)
        return self.out_proj(u * v)  # (B, L, D)

    def fused_segments(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        hidden = self.in_proj.out_features // 2
        return dict.fromkeys(("in_proj.weight", "in_proj.bias"), (0, (hidden, hidden)))  # (u, z)

    def flops(self, seq_len: int) -> int:
        """Projections plus the position-mixing matmul ``2 L² hidden``. The causal form multiplies
        the full masked ``W``, so it is counted in full. Elementwise work (GELU, LayerNorm,
        gating) is not counted."""
        proj = linear_flops(self.dim, 2 * self.hidden, seq_len)
        proj += linear_flops(self.hidden, self.dim, seq_len)
        return proj + 2 * seq_len * seq_len * self.hidden
