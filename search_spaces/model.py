"""``build_model(arch)``: a plain ``nn.Module`` built from an ``Arch``, with no supernet code."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from search_spaces.arch import Arch, LayerSpec
from search_spaces.blocks import BLOCK_TYPES, PassThrough
from search_spaces.heads import HEAD_TYPES
from search_spaces.looped import Trunk
from search_spaces.registry import create_op


class Model(nn.Module):
    """stem -> trunk of blocks (with loops) -> final norm -> head.

    ``forward(inputs, padding_mask=None)``: ``inputs`` are token ids (B, L) or images
    (B, C, H, W); ``padding_mask`` (B, L) is True at real tokens.
    """

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        stem_cls, head_cls = HEAD_TYPES[arch.head.kind]
        self.stem = stem_cls(arch)
        lp = arch.loop_spec
        blocks = [build_block(arch, layer) for layer in arch.layers]
        self.trunk = Trunk(
            blocks, begin=lp.begin, middle=lp.middle, repeats=lp.repeats, streams=lp.streams
        )
        # post-norm blocks already end with a norm; pre-norm needs one before the head
        last_norm = arch.layers[-1].norm
        pre = arch.norm_placement == "pre"
        self.final_norm = _make_op(arch, last_norm, "norm") if pre else PassThrough()
        self.head = head_cls(arch)

    def forward(
        self, inputs: torch.Tensor, *, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.stem(inputs)  # (B, L, D)
        x = self.trunk(x, padding_mask=padding_mask)
        x = self.final_norm(x, padding_mask=padding_mask)
        return self.head(x, padding_mask=padding_mask)

    def flops(self, seq_len: int | None = None) -> int:
        """Analytic forward FLOPs for one input of ``seq_len`` tokens (default: ``arch.max_len``)."""
        seq_len = seq_len or self.arch.max_len
        parts = (self.stem, self.trunk, self.final_norm, self.head)
        return sum(p.flops(seq_len) for p in parts)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _make_op(arch: Arch, spec, kind: str) -> nn.Module:
    context = {
        "causal": arch.causal,
        "head_dim": arch.head_dim,
        "grid": arch.grid,
        "max_len": arch.max_len,
    }
    return create_op(spec.name, arch.dim, kind=kind, context=context, **dict(spec.params))


def build_block(arch: Arch, layer: LayerSpec) -> nn.Module:
    """One residual block of ``arch`` as described by ``layer``."""
    return BLOCK_TYPES[arch.block](
        _make_op(arch, layer.mixer, "mixer"),
        _make_op(arch, layer.channel, "channel"),
        partial(_make_op, arch, layer.norm, "norm"),
        pre_norm=arch.norm_placement == "pre",
    )


def build_model(arch: Arch) -> Model:
    """The model ``arch`` describes, freshly initialised."""
    return Model(arch)
