"""The operator contract, checked for every registered operator (a new operator is tested the
moment it is registered): shapes, backward, finiteness, determinism, padding, causality."""

from __future__ import annotations

import pytest
import torch

import search_spaces
from search_spaces import get_op, list_ops

DIM, B, L = 32, 2, 19  # L deliberately not a multiple of typical chunk/block sizes

CASES = [
    (name, causal)
    for names in list_ops().values()
    for name in names
    for causal in (False, True)
    if not causal or get_op(name).supports_causal
]


def make(name: str, causal: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return search_spaces.create_op(name, DIM, causal=causal).double()


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, DIM, generator=g, dtype=torch.float64)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :5] = False  # left padding
    mask[1, -4:] = False  # right padding
    return x, mask


@pytest.mark.parametrize("name,causal", CASES)
def test_shape_backward_finite(name: str, causal: bool) -> None:
    op = make(name, causal)
    x, mask = inputs()
    x.requires_grad_(True)
    for pm in (None, mask):
        y = op(x, padding_mask=pm)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        y.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None


@pytest.mark.parametrize("name,causal", CASES)
def test_deterministic_under_seed(name: str, causal: bool) -> None:
    x, mask = inputs()
    y1 = make(name, causal, seed=3)(x, padding_mask=mask)
    y2 = make(name, causal, seed=3)(x, padding_mask=mask)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)


@pytest.mark.parametrize("name,causal", CASES)
def test_padded_positions_contribute_nothing(name: str, causal: bool) -> None:
    op = make(name, causal)
    x, mask = inputs()
    noise = torch.randn_like(x) * 5
    x2 = torch.where(mask[..., None], x, noise)
    y1, y2 = op(x, padding_mask=mask), op(x2, padding_mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", [n for n, c in CASES if c])
def test_causality(name: str) -> None:
    op = make(name, causal=True)
    x, _ = inputs()
    for t in (0, 7, L - 2):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        y1, y2 = op(x), op(x2)
        torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,causal", CASES)
def test_flops_positive_and_grow_with_length(name: str, causal: bool) -> None:
    op = make(name, causal)
    f_short, f_long = op.flops(64), op.flops(256)
    assert isinstance(f_short, int) and f_short >= 0
    assert f_long >= f_short
    if name != "identity":
        assert f_short > 0


def test_every_issue_operator_is_registered() -> None:
    ops = list_ops()
    assert set(ops["mixer"]) >= {
        "softmax", "sqa", "linear", "sliding_window", "ssm",
        "pooling", "gated_conv", "glu_mixer", "identity",
    }  # fmt: skip
    assert set(ops["channel"]) >= {"mlp", "glu", "swiglu", "geglu", "reglu"}
    assert set(ops["norm"]) >= {"layernorm", "rmsnorm", "crmsnorm", "batchnorm"}


def test_unknown_operator_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown mixer operator 'nope'.*softmax"):
        get_op("nope", "mixer")
    with pytest.raises(ValueError, match="unknown operator 'nope'.*swiglu"):
        get_op("nope")


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ValueError, match="no hyperparameter 'colour'"):
        search_spaces.create_op("softmax", DIM, colour=3)


def test_user_operator_registers_on_import() -> None:
    from search_spaces.ops.base import Operator

    @search_spaces.register_op("test_scaled_identity", kind="mixer")
    class Scaled(Operator):
        def __init__(self, dim: int, *, causal: bool = False, scale: float = 2.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x, *, padding_mask=None):
            return x * self.scale

        def flops(self, seq_len: int) -> int:
            return 0

    try:
        assert "test_scaled_identity" in list_ops("mixer")
        op = search_spaces.create_op("test_scaled_identity", DIM, scale=3.0)
        assert op(torch.ones(1, 2, DIM)).max() == 3.0
    finally:
        from search_spaces.registry import _REGISTRY

        del _REGISTRY["mixer"]["test_scaled_identity"]
