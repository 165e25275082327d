"""Sliding-window (local) softmax attention, computed block-wise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from search_spaces.ops.projections import AttentionProjections, KVCache, append_kv, decode_mask
from search_spaces.registry import register_op


def key_blocks(t: torch.Tensor, groups: int, block: int, before: int, after: int) -> torch.Tensor:
    """(B, H_kv, L, hd) -> (B H_kv groups, n, span, hd), ``n = ceil(L / block)``: entry ``i``
    holds positions ``(i - before) * block`` to ``(i + 1 + after) * block - 1``, zero outside
    [0, L); each key/value head is repeated ``groups`` times (grouped-query attention).

    One zero-padded copy of ``t`` and a strided view (``unfold``) over it, so neighbouring blocks
    share memory instead of being copied ``before + 1 + after`` times.
    """
    B, H, L, hd = t.shape
    n, span = -(-L // block), (before + 1 + after) * block
    buf = t.new_zeros(B, H, groups, (before + n + after) * block, hd)
    buf[:, :, :, before * block : before * block + L] = t[:, :, None]
    return buf.flatten(0, 2).unfold(1, span, block).movedim(-1, 2)  # (B H groups, n, span, hd)


@register_op("sliding_window", kind="mixer")
class SlidingWindowAttention(AttentionProjections):
    """Sliding-window softmax attention (Beltagy et al. 2020 "Longformer"; Jiang et al. 2023
    "Mistral 7B").

    Equation: ``softmax(Q Kᵀ / sqrt(head_dim) + M) V`` per head, where key ``j`` is visible to
    query ``i`` iff ``i - window < j <= i`` (causal) or ``|i - j| <= window // 2`` (not causal).
    Block-wise: queries are cut into blocks of ``block_size``, each block sees only the key blocks
    its window reaches, and one ``F.scaled_dot_product_attention`` call covers every block, so
    cost grows as ``L x (window + block_size)`` instead of ``L²``. Same q/k/v/o layout as
    ``softmax``: with ``window >= L`` (causal) the two are equal.
    """

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
        window: int = 128,
        block_size: int = 64,
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
        if window < 1 or block_size < 1:
            raise ValueError(
                f"`window >= 1` and `block_size >= 1` must hold, but got {window=}, {block_size=}"
            )
        self.window, self.block_size = window, block_size

    def layout(self, seq_len: int) -> tuple[int, int, int, int]:
        """(block, number of blocks, key blocks before, key blocks after) for ``seq_len``."""
        back, ahead = (self.window - 1, 0) if self.causal else (self.window // 2,) * 2
        block = min(self.block_size, self.window, seq_len)
        n = -(-seq_len // block)
        return block, n, min(-(-back // block), n - 1), min(-(-ahead // block), n - 1)

    def band_bias(
        self, seq_len: int, padding_mask: torch.Tensor | None, dtype: torch.dtype, device
    ) -> torch.Tensor:
        """Additive mask of the blocked form: (B heads or 1, n, block, span), 0 where allowed.

        Built from two small pieces: the band, which depends only on offsets inside a block
        (block, span), and which keys exist (B or 1, n, 1, span). Penalties are finite (a quarter
        and a half of the dtype's min) so no row is all -inf: a query with no allowed key (a
        padded one) attends to the padded keys of its band, and its output stays finite.
        """
        block, n, before, after = self.layout(seq_len)
        span = (before + 1 + after) * block
        offset = torch.arange(block, device=device)[:, None] - torch.arange(span, device=device)
        offset = offset + before * block  # query position minus key position: (block, span)
        half = self.window // 2
        band = (offset >= 0) & (offset < self.window) if self.causal else offset.abs() <= half
        real = torch.ones(1, seq_len, dtype=torch.bool, device=device)
        real = real if padding_mask is None else padding_mask  # (B or 1, L)
        keys = F.pad(real, (before * block, (n + after) * block - seq_len))
        keys = keys.unfold(-1, span, block)  # (B or 1, n, span): which keys exist
        big = torch.finfo(dtype).min / 4
        band_bias = torch.zeros(band.shape, dtype=dtype, device=device).masked_fill_(~band, 2 * big)
        key_bias = torch.zeros(keys.shape, dtype=dtype, device=device).masked_fill_(~keys, big)
        bias = band_bias + key_bias[:, :, None]  # (B or 1, n, block, span)
        # SDPA's batch is (B heads): a per-sequence mask is repeated for each head
        return bias if padding_mask is None else bias.repeat_interleave(self.heads, dim=0)

    def forward(
        self,
        x: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.project(x, positions)  # (B, H, L, hd), (B, Hkv, L, hd) x 2
        return self.merge(self.attend(q, k, v, padding_mask))  # (B, L, D)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Block-wise windowed attention of projected heads: (B, H, L, hd) from q (B, H, L, hd)
        and k, v (B, Hkv, L, hd)."""
        B, H, L, hd = q.shape
        block, n, before, after = self.layout(L)
        q = F.pad(q, (0, 0, 0, n * block - L)).reshape(B * H, n, block, hd)  # (B H, n, block, hd)
        groups = H // self.kv_heads
        k, v = (key_blocks(t, groups, block, before, after) for t in (k, v))
        # k, v: (B H, n, span, hd), keys of query block i = blocks i - before .. i + after
        mask = self.band_bias(L, padding_mask, q.dtype, q.device)  # (B H or 1, n, block, span)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B H, n, block, hd)
        return y.view(B, H, n * block, hd)[:, :, :L]  # (B, H, L, hd)

    def step(
        self,
        x: torch.Tensor,
        state: KVCache | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Causal incremental decoding (``Operator.step``) with a bounded cache: the state, a
        ``KVCache``, keeps only the last ``window - 1`` keys/values, whatever the length decoded
        so far (None for ``window == 1``)."""
        if not self.causal:
            raise ValueError("sliding_window.step needs causal=True")
        q, k, v = self.project(x, positions)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        if state is None:  # a prompt: the block-wise form, linear in its length
            _, _, _, state = append_kv(None, k, v, padding_mask, keep=self.window - 1)
            return self.merge(self.attend(q, k, v, padding_mask)), state
        k, v, valid, state = append_kv(state, k, v, padding_mask, keep=self.window - 1)
        mask = decode_mask(valid, x.shape[1], self.window)  # (B, 1, T, S)
        groups = self.heads // self.kv_heads
        k, v = (t.repeat_interleave(groups, dim=1) if groups > 1 else t for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        return self.merge(y), state

    def sdpa_flops(self, seq_len: int) -> int:
        """The part of ``flops`` computed inside ``scaled_dot_product_attention``."""
        block, n, before, after = self.layout(seq_len)
        pairs = n * block * (before + 1 + after) * block  # (query, key) pairs computed
        return 4 * pairs * self.head_dim * self.heads

    def flops(self, seq_len: int) -> int:
        return self.projection_flops(seq_len) + self.sdpa_flops(seq_len)
