"""Linear attention with elementwise or learnable (Hedgehog) feature maps."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops.projections import AttentionProjections
from search_spaces.registry import register_op


class _ElementwiseFeatureMap(nn.Module):
    """A parameter-free feature map applied elementwise; keeps ``head_dim`` features."""

    def __init__(self, heads: int, head_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.out_dim = head_dim

    def flops(self, tokens: int) -> int:
        return 0  # elementwise work is not counted, as for softmax's exp


class EluPlusOne(_ElementwiseFeatureMap):
    """φ(x) = elu(x) + 1 (Katharopoulos et al. 2020)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exp(min(x, 0)) + max(x, 0) == elu(x) + 1; F.elu's expm1 is several times slower on CPU
        return x.clamp(min=0).add_(x.clamp(max=0).exp_())


class ReluFeatureMap(_ElementwiseFeatureMap):
    """φ(x) = relu(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class HedgehogFeatureMap(nn.Module):
    """φ(x) = softmax([x W, -x W]) per head (Zhang et al. 2024, "The Hedgehog & the Porcupine").

    ``W`` is (heads, head_dim, feature_dim), initialised to the identity when square so that the
    map starts as a softmax over the head's own coordinates; gives ``2 * feature_dim`` features.
    """

    def __init__(self, heads: int, head_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.feature_dim = heads, head_dim, feature_dim
        self.out_dim = 2 * feature_dim
        self.weight = nn.Parameter(torch.empty(heads, head_dim, feature_dim))
        with torch.no_grad():
            if head_dim == feature_dim:
                self.weight.copy_(torch.eye(head_dim).expand(heads, -1, -1))
            else:
                nn.init.trunc_normal_(self.weight, std=head_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bhld,hdf->bhlf", x, self.weight)  # (B, H, L, F)
        return torch.cat([y, -y], dim=-1).softmax(dim=-1)  # (B, H, L, 2F)

    def flops(self, tokens: int) -> int:
        return 2 * tokens * self.head_dim * self.feature_dim * self.heads


FEATURE_MAPS: dict[str, type[nn.Module]] = {
    "elu1": EluPlusOne,
    "relu": ReluFeatureMap,
    "hedgehog": HedgehogFeatureMap,
}


def with_ones(v: torch.Tensor) -> torch.Tensor:
    """``[v, 1]``: values with a column of ones appended, (..., d) -> (..., d + 1), so one
    product gives both a weighted sum and its normaliser."""
    return torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], dim=-1)


def causal_linear_chunked(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Σ_{j<=i} (φq_i·φk_j) v_j for every i, chunk by chunk: (B, H, L, F) x 2, (B, H, L, dv).

    Inside a chunk the masked quadratic form; across chunks the running state Σ φk vᵀ taken as an
    exclusive cumulative sum of per-chunk sums, so no L x L matrix is ever built.
    """
    B, H, L, Fd = fq.shape
    dv, n = v.shape[-1], -(-L // chunk)
    pad = n * chunk - L
    fq, fk, v = (F.pad(t, (0, 0, 0, pad)) if pad else t.contiguous() for t in (fq, fk, v))
    fq, fk = fq.view(-1, chunk, Fd), fk.view(-1, chunk, Fd)  # (B H n, C, F)
    v = v.view(-1, chunk, dv)  # (B H n, C, dv)
    out = torch.bmm(fq, fk.transpose(1, 2)).tril_().bmm(v)  # (B H n, C, dv)
    state = torch.bmm(fk.transpose(1, 2), v).view(B * H, n, Fd * dv)  # per-chunk Σ φk vᵀ
    prefix = state.cumsum(1).sub_(state)  # exclusive prefix sum: chunks before this one
    out = out.baddbmm_(fq, prefix.view(-1, Fd, dv))  # (B H n, C, dv)
    return out.view(B, H, n * chunk, dv)[:, :, :L]  # (B, H, L, dv)


def linear_core_flops(seq_len: int, feats: int, dv: int, *, causal: bool, chunk: int) -> int:
    """FLOPs of one head's linear attention over ``seq_len`` tokens with ``feats`` features and
    values of width ``dv``: the associative form ``φ(Q) (φ(K)ᵀ V)``, or when causal
    ``causal_linear_chunked``'s (the masked quadratic form inside each chunk, then the states)."""
    if not causal:
        return 2 * 2 * seq_len * feats * dv  # φ(K)ᵀ V, then φ(Q) (φ(K)ᵀ V)
    chunk = min(chunk, seq_len)
    n = -(-seq_len // chunk)
    intra = 2 * n * chunk * chunk * (feats + dv)  # φq φkᵀ, then (masked scores) V
    states = 2 * 2 * n * chunk * feats * dv + 2 * n * feats * dv  # φkᵀV, φq S, prefix sum
    return intra + states


def linear_uncounted_flops(seq_len: int, feats: int, dv: int, *, causal: bool, chunk: int) -> int:
    """The part of ``linear_core_flops`` that ``FlopCounterMode`` does not see: the chunked
    form's in-place ``baddbmm_`` (φq S) and its prefix sum (0 when not causal)."""
    if not causal:
        return 0
    chunk = min(chunk, seq_len)
    n = -(-seq_len // chunk)
    return 2 * n * chunk * feats * dv + 2 * n * feats * dv


class LinearAttentionState(NamedTuple):
    """Decoding state of ``linear``: ``S = Σ φ(k) [v, 1]ᵀ`` over the tokens seen,
    (B, H, F, hd + 1); its size does not grow with the sequence."""

    kv: torch.Tensor


@register_op("linear", kind="mixer")
class LinearAttention(AttentionProjections):
    """Linear attention (Katharopoulos et al. 2020) on softmax-attention projections.

    Equation per head: ``out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)``, the sums
    over ``j <= i`` when causal and every real ``j`` otherwise. ``feature_map`` is one of
    ``FEATURE_MAPS``; q and k share one feature map module (Hedgehog's choice). The q/k/v/o
    layout equals ``softmax``'s, so pretrained attention weights load unchanged (LoLCATs,
    Zhang et al. 2024). Causal: chunk-wise with ``chunk_size`` (cost linear in L); non-causal:
    associative form ``φ(Q) (φ(K)ᵀ V)``. The denominator rides along as a ones column of V.
    """

    eps = 1e-6

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        heads: int = 4,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        rope_theta: float | None = None,
        feature_map: str = "elu1",
        feature_dim: int | None = None,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(
            dim,
            causal=causal,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            out_bias=out_bias,
            rope_theta=rope_theta,
        )
        feature_dim = self.head_dim if feature_dim is None else feature_dim
        if feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"unknown `feature_map` {feature_map!r}; valid names: {', '.join(FEATURE_MAPS)}"
            )
        if feature_dim < 1 or chunk_size < 1:
            raise ValueError(
                f"`feature_dim >= 1` and `chunk_size >= 1` must hold, but got "
                f"{feature_dim=}, {chunk_size=}"
            )
        self.chunk_size = chunk_size
        self.feature_map = FEATURE_MAPS[feature_map](self.heads, self.head_dim, feature_dim)

    def forward(
        self,
        x: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.project(x, positions)  # (B, H, L, hd), (B, Hkv, L, hd) x 2
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, L, hd)
        fq, fk = self.feature_map(q), self.feature_map(k)  # (B, H, L, F)
        v = with_ones(v)  # (B, H, L, hd + 1)
        if padding_mask is not None:  # padded keys contribute nothing to numerator or denominator
            keep = padding_mask[:, None, :, None].to(fk.dtype)
            fk, v = fk * keep, v * keep
        if self.causal:
            y = causal_linear_chunked(
                fq, fk, v, min(self.chunk_size, x.shape[1])
            )  # (B, H, L, hd + 1)
        else:
            y = fq @ (fk.transpose(-1, -2) @ v)  # (B, H, L, hd + 1)
        y = y[..., :-1] / (y[..., -1:] + self.eps)  # (B, H, L, hd)
        return self.merge(y)  # (B, L, D)

    def step(
        self,
        x: torch.Tensor,
        state: LinearAttentionState | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LinearAttentionState]:
        """Causal incremental decoding (``Operator.step``) with a constant-size state,
        ``LinearAttentionState``."""
        if not self.causal:
            raise ValueError("linear.step needs causal=True")
        past = None if state is None else state.kv  # (B, H, F, hd + 1)
        q, k, v = self.project(x, positions)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, T, hd)
        fq, fk = self.feature_map(q), self.feature_map(k)  # (B, H, T, F)
        v = with_ones(v)  # (B, H, T, hd + 1)
        if padding_mask is not None:
            keep = padding_mask[:, None, :, None].to(fk.dtype)
            fk, v = fk * keep, v * keep
        fresh = fk.transpose(-1, -2) @ v  # (B, H, F, hd + 1): Σ φ(k) [v, 1]ᵀ of these tokens
        if x.shape[1] == 1:  # one token (decoding): it sees the state and itself
            kv = fresh if past is None else past + fresh
            y = fq @ kv  # (B, H, 1, hd + 1)
        else:
            y = causal_linear_chunked(fq, fk, v, min(self.chunk_size, x.shape[1]))
            if past is not None:
                y = y + fq @ past  # (B, H, T, hd + 1): contribution of every earlier token
            kv = fresh if past is None else past + fresh
        y = y[..., :-1] / (y[..., -1:] + self.eps)  # (B, H, T, hd)
        return self.merge(y), LinearAttentionState(kv)

    def flops(self, seq_len: int) -> int:
        feats, dv, H = self.feature_map.out_dim, self.head_dim + 1, self.heads
        maps = 2 * self.feature_map.flops(seq_len)  # q and (expanded) k
        core = linear_core_flops(seq_len, feats, dv, causal=self.causal, chunk=self.chunk_size)
        return self.projection_flops(seq_len) + maps + H * core

    def counted_flops(self, seq_len: int) -> int:
        feats, dv = self.feature_map.out_dim, self.head_dim + 1
        hidden = linear_uncounted_flops(
            seq_len, feats, dv, causal=self.causal, chunk=self.chunk_size
        )
        return self.flops(seq_len) - self.heads * hidden
