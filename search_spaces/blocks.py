"""Residual blocks: a block takes its mixer, channel mixer and norms as constructor arguments,
so swapping an operator is data, not code (timm's MetaFormer pattern)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[], nn.Module]


class SequentialBlock(nn.Module):
    """Mixer then channel mixer, each in its own residual branch.

    pre-norm:  x = x + mixer(norm1(x));  x = x + channel(norm2(x))
    post-norm: x = norm1(x + mixer(x));  x = norm2(x + channel(x))   (original Transformer)
    """

    def __init__(
        self, mixer: nn.Module, channel: nn.Module, make_norm: NormFactory, *, pre_norm: bool
    ) -> None:
        super().__init__()
        self.mixer, self.channel = mixer, channel
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        pm = padding_mask
        if self.pre_norm:
            x = x + self.mixer(self.norm1(x, padding_mask=pm), padding_mask=pm)
            return x + self.channel(self.norm2(x, padding_mask=pm), padding_mask=pm)
        x = self.norm1(x + self.mixer(x, padding_mask=pm), padding_mask=pm)
        return self.norm2(x + self.channel(x, padding_mask=pm), padding_mask=pm)

    def flops(self, seq_len: int) -> int:
        return sum(m.flops(seq_len) for m in (self.mixer, self.channel, self.norm1, self.norm2))


class ParallelBlock(nn.Module):
    """Mixer and channel mixer side by side on one normalised input (GPT-J, PaLM).

    pre-norm:  h = norm1(x);  x = x + mixer(h) + channel(h)
    post-norm: x = norm1(x + mixer(x) + channel(x))
    """

    def __init__(
        self, mixer: nn.Module, channel: nn.Module, make_norm: NormFactory, *, pre_norm: bool
    ) -> None:
        super().__init__()
        self.mixer, self.channel, self.norm1 = mixer, channel, make_norm()
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        pm = padding_mask
        if self.pre_norm:
            h = self.norm1(x, padding_mask=pm)
            return x + self.mixer(h, padding_mask=pm) + self.channel(h, padding_mask=pm)
        return self.norm1(
            x + self.mixer(x, padding_mask=pm) + self.channel(x, padding_mask=pm), padding_mask=pm
        )

    def flops(self, seq_len: int) -> int:
        return sum(m.flops(seq_len) for m in (self.mixer, self.channel, self.norm1))


BLOCK_TYPES: dict[str, type[nn.Module]] = {"sequential": SequentialBlock, "parallel": ParallelBlock}


class PassThrough(nn.Module):
    """Identity with the operator call signature (where an optional norm is absent)."""

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x

    def flops(self, seq_len: int) -> int:
        return 0
