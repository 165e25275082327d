"""Softmax attention and Sparse Query Attention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from search_spaces.ops.base import causal_pairs
from search_spaces.ops.projections import (
    AttentionProjections,
    KVCache,
    append_kv,
    decode_mask,
    key_mask,
)
from search_spaces.registry import register_op


def attention_core_flops(seq_len: int, heads: int, head_dim: int, causal: bool) -> int:
    """FLOPs of QKᵀ and PV for ``heads`` heads: 2 matmuls x 2 FLOPs x pairs x head_dim."""
    pairs = causal_pairs(seq_len) if causal else seq_len * seq_len
    return 4 * pairs * head_dim * heads


@register_op("softmax", kind="mixer")
class SoftmaxAttention(AttentionProjections):
    """Multi-head softmax attention (Vaswani et al. 2017), GQA/MQA when ``kv_heads < heads``.

    Equation: ``softmax(Q Kᵀ / sqrt(head_dim) + mask) V`` per head, then ``W_o``.
    Computed with ``F.scaled_dot_product_attention``; ``kv_heads < heads`` shares each key/value
    head among ``heads / kv_heads`` query heads (Ainslie et al. 2023).
    """

    def forward(
        self,
        x: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.project(x, positions)  # (B, H, L, hd), (B, Hkv, L, hd) x 2
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, L, hd)
        L = x.shape[1]
        if padding_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            mask = key_mask(padding_mask, self.causal, L, L, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.merge(y)  # (B, L, D)

    def step(
        self,
        x: torch.Tensor,
        state: KVCache | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Causal incremental decoding (``Operator.step``): the state is a ``KVCache`` that
        grows with every token."""
        if not self.causal:
            raise ValueError(f"{self.op_name}.step needs causal=True")
        q, k, v = self.project(x, positions)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        k, v, valid, state = append_kv(state, k, v, padding_mask)
        mask = decode_mask(valid, x.shape[1])  # (B, 1, T, S)
        y = F.scaled_dot_product_attention(q, self.expand_kv(k), self.expand_kv(v), attn_mask=mask)
        return self.merge(y), state

    def sdpa_flops(self, seq_len: int) -> int:
        """The part of ``flops`` computed inside ``scaled_dot_product_attention``."""
        return attention_core_flops(seq_len, self.heads, self.head_dim, self.causal)

    def flops(self, seq_len: int) -> int:
        return self.projection_flops(seq_len) + self.sdpa_flops(seq_len)


@register_op("sqa", kind="mixer")
class SparseQueryAttention(SoftmaxAttention):
    """Sparse Query Attention (Filipek 2025, "SQA: a computationally efficient attention").

    Softmax attention with ``q_heads`` query heads instead of the baseline's ``heads``, and
    ``kv_heads`` key/value heads; ``W_o`` maps ``q_heads * head_dim`` back to ``dim``. The score
    computation, the dominant cost at long length, scales with ``q_heads``. Symmetric SQA uses
    ``q_heads = kv_heads = heads / 2`` (the default), extreme SQA ``heads / 4``.
    """

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        heads: int = 4,
        q_heads: int | None = None,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        rope_theta: float | None = None,
    ) -> None:
        head_dim = dim // heads if head_dim is None else head_dim
        q_heads = max(1, heads // 2) if q_heads is None else q_heads
        kv_heads = q_heads if kv_heads is None else kv_heads
        if q_heads > heads:
            raise ValueError(f"`q_heads <= heads` must hold for sqa, but got {q_heads=}, {heads=}")
        super().__init__(
            dim,
            causal=causal,
            heads=q_heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            out_bias=out_bias,
            rope_theta=rope_theta,
        )
        self.baseline_heads = heads

    @classmethod
    def hparams_from_attention(
        cls, host: Mapping[str, Any], requested: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The host's layout with half its query heads (or the plan's ``q_heads``) and no more
        kv heads than query heads; ``init_from_attention`` then keeps every ``r``-th query head
        and mean-pools key/value heads in groups."""
        kw = super().hparams_from_attention(host, requested)
        kw["q_heads"] = requested.get("q_heads", max(1, kw["heads"] // 2))
        kw["kv_heads"] = min(kw["kv_heads"], kw["q_heads"])
        return kw
