"""Low-rank adapters (Hu et al. 2021) for stage 2's ``train: lora``: the host's linears stay
frozen and learn ``W + B A * alpha / r``; ``merge`` folds the update back into plain
``nn.Linear`` modules so the saved model keeps the host's structure. Written by hand: a few
lines, where a dependency (peft) would have to understand the grafted modules."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # B = 0: starts as the base layer
        base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(model: nn.Module, skip: list[nn.Module], rank: int, alpha: float) -> int:
    """Wrap every ``nn.Linear`` of ``model`` outside the ``skip`` modules; returns the count."""
    if rank < 1:
        raise ValueError(f"stage2.lora_rank must be >= 1, but got {rank}")
    skipped = {id(m) for s in skip for m in s.modules()}
    count = 0
    for parent in list(model.modules()):
        if id(parent) in skipped or isinstance(parent, LoRALinear):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and id(child) not in skipped:
                setattr(parent, name, LoRALinear(child, rank, alpha))
                count += 1
    return count


def merge_lora(model: nn.Module) -> None:
    """Replace every ``LoRALinear`` by its base linear with the update folded in."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
