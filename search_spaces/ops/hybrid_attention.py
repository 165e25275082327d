"""Sliding-window softmax + linear attention in one layer (LoLCATs, Zhang et al. 2024)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops.linear_attention import (
    FEATURE_MAPS,
    causal_linear_chunked,
    linear_core_flops,
    linear_uncounted_flops,
    with_ones,
)
from search_spaces.ops.projections import KVCache, append_kv
from search_spaces.ops.sliding_window import SlidingWindowAttention, key_blocks
from search_spaces.registry import register_op


class SwaLinearState(NamedTuple):
    """Decoding state of ``swa_linear``, bounded in size whatever the length decoded."""

    window: KVCache | None  # the last `window - 1` keys/values (None for window == 1)
    linear: torch.Tensor | None  # S = Σ φ(k) [v, 1]ᵀ (B, H, F, hd + 1) over the keys that left
    # the window, sinks excluded (None while there are none)
    sinks: KVCache | None  # the first `sinks` keys of the sequence (None without sinks)
    seen: int  # keys so far


@register_op("swa_linear", kind="mixer")
class SlidingWindowLinearAttention(SlidingWindowAttention):
    """LoLCATs' hybrid: softmax over the keys inside a sliding window, linear attention over
    every other key, under one normalisation.

    Equation per head, with ``W(i)`` the window of query ``i`` (as in ``sliding_window``),
    ``s_ij = exp(q_i·k_j / sqrt(hd) - m_i)`` (``m_i`` the max over ``W(i)``), ``l_ij = φ(q_i)·φ(k_j)``
    and a learned per-head ``γ = sigmoid(window_factor)``::

        out_i = (γ Σ_{j∈W(i)} s_ij v_j + Σ_{j∉W(i)} l_ij v_j) / (γ Σ_{j∈W(i)} s_ij + Σ_{j∉W(i)} l_ij)

    The window part is computed block-wise like ``sliding_window``; the linear part as the linear
    sum over all (earlier, when causal) keys minus its in-window share, so cost is linear in L.
    Same q/k/v/o layout as ``softmax``: pretrained attention weights load unchanged.

    ``sinks``: the first ``sinks`` positions of the sequence join every (later, when causal)
    query's softmax part (``W(i)`` grows by them) instead of its linear part, as attention sinks
    do in StreamingLLM (Xiao et al. 2024). BERT-style encoders send much of their attention on
    long inputs to [CLS] from far away, one sharp key that a linear feature map can barely
    express. Sinks are positions in the input as given: in a left-padded row they are padding
    (and attend to nothing), so pad decoders on the right or decode one prompt at a time.
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
        window: int = 64,
        block_size: int = 64,
        feature_map: str = "hedgehog",
        feature_dim: int | None = None,
        chunk_size: int = 64,
        sinks: int = 0,
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
            window=window,
            block_size=block_size,
        )
        if feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"unknown `feature_map` {feature_map!r}; valid names: {', '.join(FEATURE_MAPS)}"
            )
        feature_dim = self.head_dim if feature_dim is None else feature_dim
        if feature_dim < 1 or chunk_size < 1:
            raise ValueError(
                f"`feature_dim >= 1` and `chunk_size >= 1` must hold, but got "
                f"{feature_dim=}, {chunk_size=}"
            )
        if sinks < 0:
            raise ValueError(f"`sinks >= 0` must hold, but got {sinks=}")
        self.chunk_size, self.sinks = chunk_size, sinks
        self.feature_map = FEATURE_MAPS[feature_map](self.heads, self.head_dim, feature_dim)
        self.window_factor = nn.Parameter(torch.full((self.heads,), 3.0))  # γ ≈ 0.95 at start

    def attend(  # forward (sliding_window's): project, attend, merge
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The hybrid of projected heads, cost linear in L: (B, H, L, hd) from q (B, H, L, hd)
        and k, v (B, Hkv, L, hd)."""
        B, H, L, hd = q.shape
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, L, hd)
        fq, fk = self.feature_map(q), self.feature_map(k)  # (B, H, L, F)
        v1 = with_ones(v)  # (B, H, L, hd + 1)
        if padding_mask is not None:  # padded keys feed neither part
            keep = padding_mask[:, None, :, None].to(fk.dtype)
            fk, v1 = fk * keep, v1 * keep
        # linear attention over all keys (earlier ones when causal): (B, H, L, hd + 1)
        if self.causal:
            lin = causal_linear_chunked(fq, fk, v1, min(self.chunk_size, L))
        else:
            lin = fq @ (fk.transpose(-1, -2) @ v1)
        # block-wise window: queries (B H, n, block, .), keys (B H, n, span, .)
        block, n, before, after = self.layout(L)
        pad = n * block - L
        qb, fqb = (F.pad(t, (0, 0, 0, pad)).reshape(B * H, n, block, -1) for t in (q, fq))
        kb, fkb, vb = (key_blocks(t, 1, block, before, after) for t in (k, fk, v1))
        bias = self.band_bias(L, padding_mask, q.dtype, q.device)  # (B H or 1, n, block, span)
        inside = (bias == 0).to(q.dtype)
        scores = (qb @ kb.transpose(-1, -2)) * hd**-0.5 + bias  # (B H, n, block, span)
        m = scores.amax(-1, keepdim=True)  # (B H, n, block, 1): the max over each window
        gamma = torch.sigmoid(self.window_factor)[None, :, None, None]  # (1, H, 1, 1)
        if self.sinks:  # sink keys outside a query's window: softmax part, not linear part
            s = min(self.sinks, L)
            sink_valid = None if padding_mask is None else padding_mask[:, :s]
            pos = torch.arange(L, device=q.device)
            far, sink_scores = self.sink_scores(q, k[:, :, :s], pos, pos[:s], sink_valid)
            m_sink = F.pad(sink_scores.amax(-1, keepdim=True), (0, 0, 0, pad))  # (B, H, nb, 1)
            m = torch.maximum(m, m_sink.reshape(B * H, n, block, 1))
            sink = gamma * torch.exp(sink_scores - m.view(B, H, n * block, 1)[:, :, :L]) * far
            sink = sink - (fq @ fk[:, :, :s].transpose(-1, -2)) * far  # move them out of `lin`
            lin = lin + sink @ v1[:, :, :s]
        sm = torch.exp(scores - m)  # exp(s - m): 0 outside the window
        lin_in = (fqb @ fkb.transpose(-1, -2)) * inside  # linear scores inside the window
        win = (gamma.expand(B, H, 1, 1).reshape(B * H, 1, 1, 1) * sm - lin_in) @ vb
        y = win.view(B, H, n * block, hd + 1)[:, :, :L] + lin  # (B, H, L, hd + 1)
        return y[..., :-1] / (y[..., -1:].clamp(min=0) + self.eps)  # (B, H, L, hd)

    def sink_scores(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        k_valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sink keys ``k`` (B, H, s, hd) at sequence positions ``k_pos`` (s,) for queries ``q``
        (B, H, T, hd) at ``q_pos`` (T,): which pairs lie outside the window (so the sink is
        attended through it), as a 0/1 float (B or 1, 1, T, s), and their scaled scores
        (B, H, T, s), a large negative number elsewhere. ``k_valid`` (B, s): real keys."""
        offset = q_pos[:, None] - k_pos[None]  # (T, s)
        far = offset >= self.window if self.causal else offset.abs() > self.window // 2
        if k_valid is not None:
            far = far & k_valid[:, None, None, :].bool()  # (B, 1, T, s)
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~far, torch.finfo(scores.dtype).min / 4)
        return far.to(q.dtype), scores

    def step(
        self,
        x: torch.Tensor,
        state: SwaLinearState | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SwaLinearState]:
        """Causal incremental decoding (``Operator.step``) with a bounded state,
        ``SwaLinearState``: the last ``window - 1`` keys/values for the softmax part, ``S`` over
        the keys that have left the window for the linear part, and with sinks the first
        ``sinks`` keys and the count so far."""
        if not self.causal:
            raise ValueError("swa_linear.step needs causal=True")
        T, hd = x.shape[1], self.head_dim
        q, k, v = self.project(x, positions)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        if state is None:  # a prompt: the block-wise form, linear in its length
            y = self.merge(self.attend(q, k, v, padding_mask))
            return y, self.prompt_state(k, v, padding_mask)
        seen = state.seen  # keys before this call
        sinks = self.update_sinks(state.sinks, k, v, padding_mask, seen)
        past = state.linear  # S over keys outside every window
        k, v, valid, kept = append_kv(state.window, k, v, padding_mask, keep=self.window - 1)
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, S, hd): cached keys, then new ones
        v1 = with_ones(v)  # (B, H, S, hd + 1)
        S = k.shape[2]
        # Only the first `gone` keys leave the window cache now, and only they can be outside a
        # query's window in this call: the linear part needs their features alone (one key per
        # decoded token), not the whole window's.
        gone = max(S - max(self.window - 1, 0), 0)
        not_sink = torch.ones(1, gone, dtype=torch.bool, device=x.device)
        if self.sinks:  # k's first key is the sequence's key number seen + T - S
            not_sink = (torch.arange(gone, device=x.device) + seen + T - S >= self.sinks)[None]
        real = (valid[:, :gone] & not_sink)[:, None, :, None].to(v1.dtype)  # real, no sinks
        fq, fk = self.feature_map(q), self.feature_map(k[:, :, :gone])  # (B,H,T,F), (B,H,gone,F)
        fk, v1l = fk * real, v1[:, :, :gone] * real
        qpos = torch.arange(S - T, S, device=x.device)[:, None]  # (T, 1)
        kpos = torch.arange(S, device=x.device)[None]  # (1, S)
        earlier = kpos <= qpos
        band = earlier & (kpos > qpos - self.window) & valid[:, None, None, :]  # (B, 1, T, S)
        scores = (q @ k.transpose(-1, -2)) * hd**-0.5  # (B, H, T, S)
        scores = scores.masked_fill(~band, torch.finfo(scores.dtype).min)
        m = scores.amax(-1, keepdim=True)
        gamma = torch.sigmoid(self.window_factor)[None, :, None, None]  # (1, H, 1, 1)
        y = 0.0
        if sinks is not None:  # sink keys beyond the window: softmax part
            q_abs = torch.arange(seen, seen + T, device=x.device)
            s_abs = torch.arange(sinks.k.shape[2], device=x.device)
            sk, sv = self.expand_kv(sinks.k), self.expand_kv(sinks.v)
            far, sink_scores = self.sink_scores(q, sk, q_abs, s_abs, sinks.valid)
            m = torch.maximum(m, sink_scores.amax(-1, keepdim=True))
            sv1 = with_ones(sv)
            y = (gamma * torch.exp(sink_scores - m) * far) @ sv1
        sm = torch.exp(scores - m) * band  # exp(s - m) in the window
        y = y + (gamma * sm) @ v1
        if gone > 0:  # leaving keys outside a query's window: linear part
            outside = (earlier & (kpos <= qpos - self.window))[:, :gone].to(fk.dtype)  # (T, gone)
            y = y + ((fq @ fk.transpose(-1, -2)) * outside) @ v1l
        if past is not None:
            y = y + fq @ past  # keys that left the window cache before these queries
        if gone > 0:
            fresh = fk[:, :, :gone].transpose(-1, -2) @ v1l[:, :, :gone]  # (B, H, F, hd + 1)
            past = fresh if past is None else past + fresh
        y = y[..., :-1] / (y[..., -1:].clamp(min=0) + self.eps)  # (B, H, T, hd)
        return self.merge(y), SwaLinearState(kept, past, sinks, seen + T)

    def update_sinks(
        self,
        sinks: KVCache | None,
        k: torch.Tensor,
        v: torch.Tensor,
        padding_mask: torch.Tensor | None,
        seen: int,
    ) -> KVCache | None:
        """The sink cache after new keys/values (B, Hkv, T, hd) that follow ``seen`` earlier
        ones: the first ``sinks`` keys of the sequence (None without sinks)."""
        if not self.sinks:
            return None
        take = max(0, min(self.sinks - seen, k.shape[2]))
        if take == 0:
            return sinks
        valid = padding_mask[:, :take] if padding_mask is not None else None
        new = append_kv(None, k[:, :, :take], v[:, :, :take], valid)[3]
        if sinks is None:
            return new
        return KVCache(
            torch.cat([sinks.k, new.k], dim=2),
            torch.cat([sinks.v, new.v], dim=2),
            torch.cat([sinks.valid, new.valid], dim=1),
        )

    def prompt_state(
        self, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> SwaLinearState:
        """The decoding state after a prompt's keys/values (B, Hkv, T, hd): its last
        ``window - 1`` keys, ``S`` over the ones before them but the sinks (``None`` if there
        are none), the sink cache and the key count."""
        T = k.shape[2]
        _, _, _, kept = append_kv(None, k, v, padding_mask, keep=self.window - 1)
        sinks = self.update_sinks(None, k, v, padding_mask, 0)
        gone = T - max(self.window - 1, 0)
        first = min(self.sinks, max(gone, 0))  # sinks among the gone keys feed no S
        if gone - first <= 0:
            return SwaLinearState(kept, None, sinks, T)
        k, v = (self.expand_kv(t[:, :, first:gone]) for t in (k, v))  # (B, H, n, hd)
        fk = self.feature_map(k)
        v1 = with_ones(v)
        if padding_mask is not None:
            real = padding_mask[:, None, first:gone, None].to(fk.dtype)
            fk, v1 = fk * real, v1 * real
        return SwaLinearState(kept, fk.transpose(-1, -2) @ v1, sinks, T)

    def sdpa_flops(self, seq_len: int) -> int:
        return 0  # the window part is computed by hand, not by scaled_dot_product_attention

    def counted_flops(self, seq_len: int) -> int:
        feats, dv = self.feature_map.out_dim, self.head_dim + 1
        hidden = linear_uncounted_flops(
            seq_len, feats, dv, causal=self.causal, chunk=self.chunk_size
        )
        return self.flops(seq_len) - self.heads * hidden

    def flops(self, seq_len: int) -> int:
        block, n, before, after = self.layout(seq_len)
        pairs = n * block * (before + 1 + after) * block
        feats, dv = self.feature_map.out_dim, self.head_dim + 1
        window = 2 * pairs * (self.head_dim + feats) + 2 * pairs * dv  # two score sets, then V
        linear = linear_core_flops(seq_len, feats, dv, causal=self.causal, chunk=self.chunk_size)
        sinks = seq_len * min(self.sinks, seq_len)  # (query, sink) pairs: two scores, then V
        window += 2 * sinks * (self.head_dim + feats) + 2 * sinks * dv
        maps = 2 * self.feature_map.flops(seq_len)
        return self.projection_flops(seq_len) + maps + self.heads * (window + linear)
