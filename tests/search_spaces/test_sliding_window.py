"""Sliding-window attention: block-wise form against full attention with an explicit band mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import get_op

DIM = 32
TOL = dict(rtol=1e-6, atol=1e-6)


def make(causal: bool, **hparams) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_op("sliding_window")(DIM, causal=causal, **hparams).double()


def reference(op, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Full L x L softmax attention with the band written out; compare at real positions."""
    q, k, v = op.project(x)
    k, v = op.expand_kv(k), op.expand_kv(v)
    L = x.shape[1]
    i, j = torch.arange(L)[:, None], torch.arange(L)[None]
    if op.causal:
        band = (j <= i) & (j > i - op.window)
    else:
        band = (i - j).abs() <= op.window // 2
    mask = band[None, None]
    if padding_mask is not None:
        mask = mask & padding_mask[:, None, None, :]
    mask = mask | (torch.eye(L, dtype=torch.bool) & ~mask.any(-1, keepdim=True))
    return op.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def padded(B: int, L: int) -> torch.Tensor:
    pm = torch.ones(B, L, dtype=torch.bool)
    pm[0, : L // 2] = False  # left padding
    pm[-1, L - L // 3 :] = False  # right padding
    return pm


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,block_size", [(8, 4), (8, 3), (5, 64), (16, 16), (1, 4), (2, 8)])
@pytest.mark.parametrize("L", [1, 6, 19, 40])
@pytest.mark.parametrize("with_padding", [False, True])
def test_blockwise_matches_band_masked_attention(causal, window, block_size, L, with_padding):
    op = make(causal, window=window, block_size=block_size, kv_heads=2)
    x = torch.randn(2, L, DIM, dtype=torch.float64)
    pm = padded(2, L) if with_padding else None
    y = op(x, padding_mask=pm)
    assert torch.isfinite(y).all()
    real = torch.ones(2, L, dtype=torch.bool) if pm is None else pm
    torch.testing.assert_close(y[real], reference(op, x, pm)[real], **TOL)


@pytest.mark.parametrize("L", [1, 17, 64])
@pytest.mark.parametrize("with_padding", [False, True])
def test_wide_window_equals_softmax(L, with_padding):
    """Causal with window >= L (and non-causal with window >= 2L) is full softmax attention."""
    for causal, window in ((True, 64), (False, 128)):
        op = make(causal, window=window, block_size=16, kv_heads=2, rope_theta=10_000.0)
        ref = get_op("softmax")(DIM, causal=causal, kv_heads=2, rope_theta=10_000.0).double()
        ref.load_state_dict(op.state_dict())
        x = torch.randn(2, L, DIM, dtype=torch.float64)
        pm = padded(2, L) if with_padding else None
        real = torch.ones(2, L, dtype=torch.bool) if pm is None else pm
        y, y_ref = op(x, padding_mask=pm), ref(x, padding_mask=pm)
        torch.testing.assert_close(y[real], y_ref[real], **TOL)


@pytest.mark.parametrize("block_size", [4, 7])
def test_causality(block_size):
    op = make(True, window=8, block_size=block_size)
    x = torch.randn(2, 40, DIM, dtype=torch.float64)
    t = 22
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    y, y2 = op(x), op(x2)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], **TOL)
    assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :])


def test_window_limits_the_receptive_field():
    op = make(True, window=6, block_size=4)
    x = torch.randn(1, 30, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 10] += 1.0  # visible to queries 10..15 only
    changed = (op(x) - op(x2)).abs().amax(-1)[0] > 1e-12
    assert changed.nonzero().flatten().tolist() == list(range(10, 16))


@pytest.mark.parametrize("causal", [True, False])
def test_padding_invariance(causal):
    op = make(causal, window=8, block_size=4)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    pm = padded(2, 30)
    x2 = torch.where(pm[..., None], x, torch.randn_like(x) * 10)
    y, y2 = op(x, padding_mask=pm), op(x2, padding_mask=pm)
    torch.testing.assert_close(y[pm], y2[pm], **TOL)
    assert torch.isfinite(y2).all()


def test_float32_backward_with_left_padding():
    op = get_op("sliding_window")(DIM, causal=True, window=4, block_size=2)
    x = torch.randn(2, 21, DIM, requires_grad=True)
    pm = torch.ones(2, 21, dtype=torch.bool)
    pm[:, :9] = False  # a fully padded prefix longer than the window
    op(x, padding_mask=pm).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in op.parameters())


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="window"):
        get_op("sliding_window")(DIM, window=0)
    with pytest.raises(ValueError, match="block_size"):
        get_op("sliding_window")(DIM, block_size=0)


def test_flops_far_below_softmax_at_long_length():
    op = get_op("sliding_window")(256, causal=True, heads=4, window=512)
    full = get_op("softmax")(256, causal=True, heads=4)
    assert op.flops(8192) < full.flops(8192) / 4
    core = op.flops(8192) - op.projection_flops(8192)
    assert core == 2 * (op.flops(4096) - op.projection_flops(4096))  # linear in L at fixed window


def test_flops_non_attention_part_matches_flop_counter():
    """FlopCounterMode counts 0 for CPU SDPA, so it sees exactly the projections."""
    op = get_op("sliding_window")(64, causal=True, window=16)
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, 50, 64))
    assert counter.get_total_flops() == op.projection_flops(50)
