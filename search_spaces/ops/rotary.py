"""Rotary position embeddings (RoFormer, Su et al. 2021), in the Llama/Hugging Face layout.

Equation: for each pair (i, i + d/2) of a head vector, rotate by angle ``t * theta^(-2i/d)``.
The "rotate half" layout (not interleaved) is what Llama, Qwen2 and Mistral checkpoints use, so
their Q/K weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Applies RoPE to ``(B, H, L, head_dim)`` queries and keys."""

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(
                f"`head_dim % 2 == 0` must hold for rotary embeddings, got {head_dim=}"
            )
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        # Scaled RoPE variants (YaRN, Llama 3, linear) replace ``inv_freq`` and multiply cos/sin
        # by an attention factor; grafting copies both from a Hugging Face checkpoint's config.
        self.scaling = 1.0

    def cos_sin(
        self, seq_len: int, device, dtype, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (L, hd), or (B, L, hd) for ``positions`` (B, L); default positions 0..L-1."""
        if positions is None:
            t = torch.arange(seq_len, device=device, dtype=torch.float32)
        else:
            t = positions.to(device=device, dtype=torch.float32)
        angles = t[..., None] * self.inv_freq.to(device)  # (..., L, hd/2)
        angles = torch.cat([angles, angles], dim=-1)  # (..., L, hd)
        return (angles.cos() * self.scaling).to(dtype), (angles.sin() * self.scaling).to(dtype)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q and k; ``positions`` (B or 1, L) gives each token's position (e.g. after a
        cached prefix or left padding), default 0..L-1."""
        cos, sin = self.cos_sin(q.shape[-2], q.device, q.dtype, positions)  # (L, hd) / (B, L, hd)
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, hd): broadcast over heads
        q = q * cos + self._rotate_half(q) * sin
        k = k * cos + self._rotate_half(k) * sin
        return q, k
