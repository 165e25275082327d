"""Q/K/V/O projections shared by every attention-like operator.

Separate ``q_proj``/``k_proj``/``v_proj``/``o_proj`` linears with explicit ``heads``,
``kv_heads`` and ``head_dim`` follow the Hugging Face Llama/BERT layout, so pretrained attention
weights copy into softmax, sqa, linear and sliding-window operators without reshaping.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.ops.base import Operator, linear_flops
from search_spaces.ops.rotary import RotaryEmbedding


class AttentionProjections(Operator):
    """Base of attention-like operators: projects ``(B, L, D)`` to per-head q, k, v and back."""

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
    ) -> None:
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        head_dim = dim // heads if head_dim is None else head_dim
        if heads < 1 or kv_heads < 1 or head_dim < 1:
            raise ValueError(
                f"heads, kv_heads, head_dim must be >= 1, got {heads=}, {kv_heads=}, {head_dim=}"
            )
        if heads % kv_heads:
            raise ValueError(f"`heads % kv_heads == 0` must hold, but got {heads=}, {kv_heads=}")
        self.dim, self.causal = dim, causal
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=out_bias)
        self.rotary = RotaryEmbedding(head_dim, rope_theta) if rope_theta else None

    def project(
        self, x: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, L, hd), k and v (B, H_kv, L, hd), with rotary applied when configured
        (at ``positions`` (B or 1, L) when given, else 0..L-1)."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary(q, k, positions)
        return q, k, v

    def expand_kv(self, t: torch.Tensor) -> torch.Tensor:
        """Repeat key/value heads for grouped-query attention: (B, H_kv, ...) -> (B, H, ...)."""
        group = self.heads // self.kv_heads
        return t if group == 1 else t.repeat_interleave(group, dim=1)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, L, hd) -> output projection -> (B, L, D)."""
        B, H, L, hd = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, L, H * hd))

    def projection_flops(self, seq_len: int) -> int:
        qo = 2 * linear_flops(self.dim, self.heads * self.head_dim, seq_len)
        kv = 2 * linear_flops(self.dim, self.kv_heads * self.head_dim, seq_len)
        return qo + kv


def key_mask(
    padding_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, device
) -> torch.Tensor | None:
    """Boolean attention mask (B or 1, 1, Lq, Lk), True where attending is allowed, or None.

    A query whose every key is masked attends to itself only, so no row is empty (no NaN)."""
    mask = None
    if causal:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()[None, None]
    if padding_mask is not None:
        pm = padding_mask[:, None, None, :]
        mask = pm if mask is None else mask & pm
    if mask is None:
        return None
    eye = torch.eye(q_len, k_len, dtype=torch.bool, device=device)[None, None]
    return mask | (eye & ~mask.any(-1, keepdim=True))


def decode_mask(key_valid: torch.Tensor, q_len: int, window: int | None = None) -> torch.Tensor:
    """Boolean mask (B, 1, q_len, S) for the last ``q_len`` of ``S`` cached keys attending
    causally (within ``window`` keys back when given) to real keys (``key_valid`` (B, S)).

    A query with no allowed key (a padded one) attends to itself only, as in ``key_mask``."""
    S = key_valid.shape[1]
    qpos = torch.arange(S - q_len, S, device=key_valid.device)[:, None]  # (q_len, 1)
    kpos = torch.arange(S, device=key_valid.device)[None]  # (1, S)
    allowed = kpos <= qpos
    if window is not None:
        allowed = allowed & (kpos > qpos - window)
    mask = allowed[None, None] & key_valid[:, None, None, :]  # (B, 1, q_len, S)
    eye = (kpos == qpos)[None, None]
    return mask | (eye & ~mask.any(-1, keepdim=True))


def append_kv(state, k, v, padding_mask, keep: int | None = None):
    """Concatenate new keys/values (B, H_kv, T, hd) and their validity onto a cached
    ``(k, v, valid)`` state; ``keep`` bounds the cache to the last ``keep`` keys (the new ones
    are always returned in full with the cached ones, before trimming)."""
    B, _, T, _ = k.shape
    valid = padding_mask if padding_mask is not None else k.new_ones(B, T, dtype=torch.bool)
    if state is not None:
        k = torch.cat([state[0], k], dim=2)
        v = torch.cat([state[1], v], dim=2)
        valid = torch.cat([state[2], valid], dim=1)
    new_state = (k, v, valid)
    if keep is not None:
        new_state = (k[:, :, -keep:], v[:, :, -keep:], valid[:, -keep:]) if keep > 0 else None
    return k, v, valid, new_state
