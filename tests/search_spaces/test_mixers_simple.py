"""Equivalence tests of the pooling, glu_mixer and identity token mixers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.registry import create_op

DIM = 8
TOL = dict(atol=1e-10, rtol=1e-10)


def naive_pool_1d(x: torch.Tensor, mask: torch.Tensor, k: int, causal: bool) -> torch.Tensor:
    """AvgPool(x) - x by a loop: mean over the real tokens of each window."""
    B, L, _ = x.shape
    left = k - 1 if causal else k // 2
    right = k - 1 - left
    out = torch.zeros_like(x)
    for b in range(B):
        for t in range(L):
            idx = [s for s in range(t - left, t + right + 1) if 0 <= s < L and mask[b, s]]
            if idx:
                out[b, t] = x[b, idx].mean(0)
    return out - x


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pool_size", [1, 2, 3, 4])
def test_pooling_1d_matches_loop(causal: bool, pool_size: int) -> None:
    torch.manual_seed(0)
    op = create_op("pooling", DIM, causal=causal, pool_size=pool_size).double()
    x = torch.randn(2, 7, DIM, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    torch.testing.assert_close(op(x), naive_pool_1d(x, mask, pool_size, causal), **TOL)
    mask[0, :3] = False  # left padding
    mask[1, 5:] = False  # right padding
    y = op(x, padding_mask=mask)
    ref = naive_pool_1d(x, mask, pool_size, causal)
    torch.testing.assert_close(y[mask], ref[mask], **TOL)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("pool_size", [1, 3, 5])
@pytest.mark.parametrize("grid", [(3, 4), (5, 2)])
def test_pooling_2d_matches_avg_pool2d(pool_size: int, grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    H, W = grid
    op = create_op("pooling", DIM, pool_size=pool_size, context={"grid": grid}).double()
    x = torch.randn(2, H * W, DIM, dtype=torch.float64)
    img = x.transpose(1, 2).reshape(2, DIM, H, W)
    pooled = F.avg_pool2d(img, pool_size, 1, pool_size // 2, count_include_pad=False)
    ref = pooled.reshape(2, DIM, H * W).transpose(1, 2) - x
    torch.testing.assert_close(op(x), ref, **TOL)


def test_pooling_2d_errors() -> None:
    with pytest.raises(ValueError, match="causal"):
        create_op("pooling", DIM, causal=True, grid=(2, 2))
    op = create_op("pooling", DIM, grid=(2, 3))
    with pytest.raises(ValueError, match="seq_len == H \\* W"):
        op(torch.randn(1, 5, DIM))
    with pytest.raises(ValueError, match="pool_size"):
        create_op("pooling", DIM, pool_size=0)


def assert_causal(op: torch.nn.Module, L: int = 9, t: int = 4) -> None:
    x = torch.randn(2, L, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    torch.testing.assert_close(op(x)[:, : t + 1], op(x2)[:, : t + 1], **TOL)
    assert not torch.allclose(op(x)[:, t + 1 :], op(x2)[:, t + 1 :])


def assert_padding_invariant(op: torch.nn.Module, L: int = 9) -> None:
    x = torch.randn(2, L, DIM, dtype=torch.float64)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[0, :3] = False
    mask[1, -2:] = False
    x2 = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    y, y2 = op(x, padding_mask=mask), op(x2, padding_mask=mask)
    torch.testing.assert_close(y[mask], y2[mask], **TOL)
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()


@pytest.mark.parametrize("pool_size", [2, 3])
def test_pooling_causal(pool_size: int) -> None:
    torch.manual_seed(0)
    assert_causal(create_op("pooling", DIM, causal=True, pool_size=pool_size).double())


@pytest.mark.parametrize("grid, causal", [(None, True), (None, False), ((3, 3), False)])
def test_pooling_padding(grid: tuple[int, int] | None, causal: bool) -> None:
    torch.manual_seed(0)
    assert_padding_invariant(create_op("pooling", DIM, causal=causal, grid=grid).double())


def randomised_glu_mixer(causal: bool, max_len: int = 16) -> torch.nn.Module:
    """A glu_mixer whose position-mixing W is far from its near-zero init, so mixing shows."""
    op = create_op("glu_mixer", DIM, causal=causal, max_len=max_len).double()
    with torch.no_grad():
        op.spatial_weight.normal_()
    return op


def test_glu_mixer_matches_formula() -> None:
    torch.manual_seed(0)
    op = randomised_glu_mixer(causal=True)
    x = torch.randn(2, 6, DIM, dtype=torch.float64)
    u, z = F.gelu(op.in_proj(x)).chunk(2, dim=-1)
    z = op.norm(z)
    W, b = op.spatial_weight[:6, :6], op.spatial_bias[:6]
    v = torch.stack(
        [sum(W[t, s] * z[:, s] for s in range(t + 1)) + b[t] for t in range(6)], dim=1
    )  # loop over positions: only s <= t
    torch.testing.assert_close(op(x), op.out_proj(u * v), **TOL)


def test_glu_mixer_causal_and_padding() -> None:
    torch.manual_seed(0)
    assert_causal(randomised_glu_mixer(causal=True))
    assert_padding_invariant(randomised_glu_mixer(causal=True))
    assert_padding_invariant(randomised_glu_mixer(causal=False))


def test_glu_mixer_noncausal_sees_future() -> None:
    torch.manual_seed(0)
    op = randomised_glu_mixer(causal=False)
    x = torch.randn(1, 5, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1
    assert not torch.allclose(op(x)[:, 0], op(x2)[:, 0])


def test_glu_mixer_init_close_to_u() -> None:
    op = create_op("glu_mixer", DIM).double()
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    u = F.gelu(op.in_proj(x)).chunk(2, dim=-1)[0]
    torch.testing.assert_close(op(x), op.out_proj(u), atol=1e-3, rtol=0)


def test_glu_mixer_too_long() -> None:
    op = create_op("glu_mixer", DIM, context={"max_len": 8})
    assert op.max_len == 8
    with pytest.raises(ValueError, match="seq_len=9.*max_len=8"):
        op(torch.randn(1, 9, DIM))


@pytest.mark.parametrize("causal", [True, False])
def test_glu_mixer_flops(causal: bool) -> None:
    op = create_op("glu_mixer", 32, causal=causal, max_len=64)
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, 40, 32))
    assert abs(op.flops(40) - counter.get_total_flops()) <= 0.05 * counter.get_total_flops()


def test_identity_is_zero() -> None:
    op = create_op("identity", DIM)
    x = torch.randn(2, 5, DIM, requires_grad=True)
    y = op(x)
    assert torch.equal(y, torch.zeros_like(x))
    y.square().sum().backward()  # stays on the graph: a zero gradient reaches x
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert op.flops(100) == 0
