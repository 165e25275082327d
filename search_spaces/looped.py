"""The trunk: ``begin`` blocks, a ``middle`` group applied ``repeats`` times with shared weights,
``end`` blocks. A model without loops is all ``begin`` blocks (one code path for both).

Hyper-connections (Zhu et al. 2024, "Hyper-Connections"; applied per loop as in Hyperloop
Transformers): the hidden state is widened to ``n`` residual streams H (n, B, L, D). Each pass of
the middle group reads ``a·H``, and writes back ``H <- M H + b ⊗ (group(a·H) - a·H)`` with
learned ``a`` (n), ``M`` (n×n), ``b`` (n). The streams are averaged after the last pass.
Initialised with a = 1/n, M = I, b = 1, the trunk starts equal to plain looping.
"""

from __future__ import annotations

import torch
from torch import nn


def _run(blocks: nn.ModuleList, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    for block in blocks:
        x = block(x, padding_mask=padding_mask)
    return x


class RepeatLoop(nn.Module):
    """Apply the middle group ``repeats`` times on a single residual stream."""

    def __init__(self, middle: nn.ModuleList, repeats: int) -> None:
        super().__init__()
        self.middle, self.repeats = middle, repeats

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for _ in range(self.repeats):
            x = _run(self.middle, x, padding_mask)
        return x


class HyperConnectionLoop(nn.Module):
    """Apply the middle group ``repeats`` times over ``streams`` mixed residual streams."""

    def __init__(self, middle: nn.ModuleList, repeats: int, streams: int) -> None:
        super().__init__()
        self.middle, self.repeats, self.streams = middle, repeats, streams
        self.read = nn.Parameter(torch.full((streams,), 1.0 / streams))
        self.mix = nn.Parameter(torch.eye(streams))
        self.write = nn.Parameter(torch.ones(streams))

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.streams, *x.shape)  # (n, B, L, D)
        for _ in range(self.repeats):
            inp = torch.einsum("n,nbld->bld", self.read, h)  # (B, L, D)
            delta = _run(self.middle, inp, padding_mask) - inp
            h = torch.einsum("nm,mbld->nbld", self.mix, h) + self.write[:, None, None, None] * delta
        return h.mean(0)  # (B, L, D)


class Trunk(nn.Module):
    """begin blocks -> loop over the middle group -> end blocks."""

    def __init__(
        self, blocks: list[nn.Module], *, begin: int, middle: int, repeats: int, streams: int
    ) -> None:
        super().__init__()
        self.begin = nn.ModuleList(blocks[:begin])
        group = nn.ModuleList(blocks[begin : begin + middle])
        self.loop = (
            HyperConnectionLoop(group, repeats, streams)
            if streams > 1
            else RepeatLoop(group, repeats)
        )
        self.end = nn.ModuleList(blocks[begin + middle :])

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _run(self.begin, x, padding_mask)
        x = self.loop(x, padding_mask=padding_mask)
        return _run(self.end, x, padding_mask)

    def flops(self, seq_len: int) -> int:
        once = sum(b.flops(seq_len) for b in (*self.begin, *self.end))
        return once + self.loop.repeats * sum(b.flops(seq_len) for b in self.loop.middle)
