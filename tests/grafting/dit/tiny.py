"""A small DiT with random weights and inputs for it, shared by the DiT tests and the grafting
tests that run over every registered family."""

from __future__ import annotations

import torch

from grafting.dit.model import DiT, DiTConfig


def random_dit(seed: int = 0) -> DiT:
    """A small DiT with every weight random (adaLN-Zero would make every block the identity)."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig.from_preset("DiT-digits", depth=2, hidden_size=64, num_heads=4)).eval()
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    return model


def dit_inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, t, y)`` for ``random_dit``: ``n`` (at most 3) noisy images, timesteps and classes."""
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(n, 1, 16, 16, generator=g),
        torch.tensor([1, 500, 999])[:n],
        torch.tensor([0, 3, 10])[:n],
    )
