"""Q/K/V/O projections shared by every attention-like operator.

Separate ``q_proj``/``k_proj``/``v_proj``/``o_proj`` linears with explicit ``heads``,
``kv_heads`` and ``head_dim`` follow the Hugging Face Llama/BERT layout, so pretrained attention
weights copy into softmax, sqa, linear and sliding-window operators without reshaping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from search_spaces.ops.base import Operator, copy_checked, linear_flops
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

    @property
    def uses_positions(self) -> bool:
        return self.rotary is not None

    def use_host_rotary(self, inv_freq: torch.Tensor, scaling: float) -> bool:
        if self.rotary is None:
            return False
        if self.rotary.inv_freq.shape != inv_freq.shape:
            raise ValueError(
                f"rotary sizes differ: operator {tuple(self.rotary.inv_freq.shape)}, "
                f"host {tuple(inv_freq.shape)}"
            )
        self.rotary.inv_freq = inv_freq.to(self.rotary.inv_freq.device)
        self.rotary.scaling = scaling
        return True

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

    def sdpa_flops(self, seq_len: int) -> int:
        """The part of ``flops`` computed inside ``scaled_dot_product_attention`` (0 for an
        operator that does not call it)."""
        return 0

    def counted_flops(self, seq_len: int) -> int:
        return self.flops(seq_len) - self.sdpa_flops(seq_len)  # SDPA counts 0 FLOPs on CPU

    @classmethod
    def hparams_from_attention(
        cls, host: Mapping[str, Any], requested: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The host's own layout (heads, kv_heads, head_dim, bias flags, rope_theta), so that
        its Q/K/V/O weights fit unchanged."""
        return dict(host)

    def init_from_attention(
        self, weights: Mapping[str, torch.Tensor], host: Mapping[str, Any]
    ) -> bool:
        """The host's Q/K/V/O unchanged (LoLCATs; Mamba-in-the-Llama), or reduced to this
        operator's fewer heads by ``select_heads`` (the GQA uptraining init)."""
        if (self.heads, self.kv_heads) != (host["heads"], host["kv_heads"]):
            weights = select_heads(weights, self.heads, self.kv_heads, host)
        copy_checked(self, weights)
        return True


def select_heads(
    w: Mapping[str, torch.Tensor], q_heads: int, kv_heads: int, host: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Host attention weights reduced to ``q_heads`` query and ``kv_heads`` kv heads.

    Query heads ``0, r, 2r, ...`` (``r = H / q_heads``) are kept unchanged, with their columns of
    ``W_o`` (unscaled: the dropped heads' share is left for distillation to recover). Each new kv
    head serves ``q_heads / kv_heads`` consecutive kept query heads and starts as the mean of the
    host kv heads those queries read, so a host with as many kv heads as query heads keeps its
    kept heads exactly (query, key, value and output)."""
    H, Hkv, hd = host["heads"], host["kv_heads"], host["head_dim"]
    if H % q_heads or Hkv % kv_heads or q_heads % kv_heads:
        raise ValueError(
            f"cannot start {q_heads} query / {kv_heads} kv heads from the host's {H} / {Hkv}: "
            "both must divide the host's, and the kv heads the query heads"
        )
    keep = torch.arange(0, H, H // q_heads)  # kept query heads
    host_kv = (keep // (H // Hkv)).view(kv_heads, -1)  # host kv head of each, per new kv head

    def take(t: torch.Tensor) -> torch.Tensor:  # (H hd, ...) -> (q_heads hd, ...)
        return t.reshape(H, hd, -1)[keep].reshape(-1, *t.shape[1:])

    def pool(t: torch.Tensor) -> torch.Tensor:  # (Hkv hd, ...) -> (kv_heads hd, ...)
        heads = t.reshape(Hkv, hd, -1)
        pooled = [heads[group.unique()].mean(0) for group in host_kv]
        return torch.stack(pooled).reshape(-1, *t.shape[1:])

    out = {}
    for name, t in w.items():
        if name.startswith("q_proj"):
            out[name] = take(t)
        elif name.startswith(("k_proj", "v_proj")):
            out[name] = pool(t)
        elif name == "o_proj.weight":  # the kept heads' columns
            out[name] = take(t.t()).t().contiguous()
        else:
            out[name] = t
    return out


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


class KVCache(NamedTuple):
    """Decoding state of softmax-like attention (the ``step`` of ``softmax``, ``sqa``,
    ``sliding_window``): cached keys and values (B, H_kv, S, hd) and which of them are real
    tokens (B, S)."""

    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor


def append_kv(
    state: KVCache | None,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: torch.Tensor | None,
    keep: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, KVCache | None]:
    """Concatenate new keys/values (B, H_kv, T, hd) and their validity onto a cached state;
    returns all keys, values and validity (cached, then new) and the new state, which ``keep``
    bounds to the last ``keep`` keys (None when ``keep == 0``)."""
    B, _, T, _ = k.shape
    valid = padding_mask if padding_mask is not None else k.new_ones(B, T, dtype=torch.bool)
    if state is not None:
        k = torch.cat([state.k, k], dim=2)
        v = torch.cat([state.v, v], dim=2)
        valid = torch.cat([state.valid, valid], dim=1)
    new_state = KVCache(k, v, valid)
    if keep == 0:
        new_state = None
    elif keep is not None:
        new_state = KVCache(k[:, :, -keep:], v[:, :, -keep:], valid[:, -keep:])
    return k, v, valid, new_state
