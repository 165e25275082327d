"""Linear attention: chunked and associative forms against the naive quadratic form."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import get_op
from search_spaces.ops.linear_attention import FEATURE_MAPS

DIM = 32
TOL = dict(rtol=1e-5, atol=1e-5)


def make(causal: bool, **hparams) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_op("linear")(DIM, causal=causal, **hparams).double()


def naive(op, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A = φ(Q) φ(K)ᵀ (tril when causal), out = A V / (A 1 + eps), padded keys dropped."""
    q, k, v = op.project(x)
    k, v = op.expand_kv(k), op.expand_kv(v)
    fq, fk = op.feature_map(q), op.feature_map(k)
    if padding_mask is not None:
        fk = fk * padding_mask[:, None, :, None]
    A = fq @ fk.transpose(-1, -2)  # (B, H, L, L)
    if op.causal:
        A = A.tril()
    return op.merge(A @ v / (A.sum(-1, keepdim=True) + op.eps))


def left_padded(B: int, L: int) -> torch.Tensor:
    pm = torch.ones(B, L, dtype=torch.bool)
    pm[0, : L // 2] = False  # left padding: early queries see only padded keys
    pm[-1, L - L // 3 :] = False  # right padding
    return pm


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("L", [1, 5, 16, 37, 48])
def test_causal_chunked_matches_naive(feature_map, L):
    op = make(True, feature_map=feature_map, chunk_size=16, kv_heads=2)
    x = torch.randn(2, L, DIM, dtype=torch.float64)
    torch.testing.assert_close(op(x), naive(op, x), **TOL)


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("L", [1, 9, 33])
def test_noncausal_matches_naive(feature_map, L):
    op = make(False, feature_map=feature_map)
    x = torch.randn(2, L, DIM, dtype=torch.float64)
    torch.testing.assert_close(op(x), naive(op, x), **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_padding_matches_naive_and_is_finite(causal, feature_map):
    op = make(causal, feature_map=feature_map, chunk_size=8)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    pm = left_padded(2, 30)
    y = op(x, padding_mask=pm)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[pm], naive(op, x, pm)[pm], **TOL)


def test_chunk_size_invariance():
    x = torch.randn(2, 45, DIM, dtype=torch.float64)
    ref = make(True, chunk_size=45)(x)
    for chunk in (1, 7, 16, 64, 200):
        torch.testing.assert_close(make(True, chunk_size=chunk)(x), ref, **TOL)


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_causality(feature_map):
    op = make(True, feature_map=feature_map, chunk_size=8)
    x = torch.randn(2, 40, DIM, dtype=torch.float64)
    t = 21
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    y, y2 = op(x), op(x2)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], **TOL)
    assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :])


@pytest.mark.parametrize("causal", [True, False])
def test_padding_invariance(causal):
    op = make(causal, chunk_size=8)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    pm = left_padded(2, 30)
    x2 = torch.where(pm[..., None], x, torch.randn_like(x) * 10)
    y, y2 = op(x, padding_mask=pm), op(x2, padding_mask=pm)
    torch.testing.assert_close(y[pm], y2[pm], **TOL)
    assert torch.isfinite(y2).all()


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_shares_key_value_heads(kv_heads):
    op = make(True, heads=4, kv_heads=kv_heads, chunk_size=4)
    assert op.k_proj.out_features == kv_heads * op.head_dim
    x = torch.randn(2, 13, DIM, dtype=torch.float64)
    torch.testing.assert_close(op(x), naive(op, x), **TOL)


def test_hedgehog_feature_map():
    op = make(True, feature_map="hedgehog")
    w = op.feature_map.weight  # one map shared by q and k
    assert [n for n, _ in op.feature_map.named_parameters()] == ["weight"]
    torch.testing.assert_close(w, torch.eye(op.head_dim, dtype=w.dtype).expand_as(w))
    q = torch.randn(2, op.heads, 5, op.head_dim, dtype=torch.float64)
    f = op.feature_map(q)
    assert f.shape[-1] == 2 * op.head_dim
    torch.testing.assert_close(f.sum(-1), torch.ones_like(f[..., 0]))  # softmax over [xW, -xW]
    wide = make(True, feature_map="hedgehog", feature_dim=3)
    assert wide.feature_map.out_dim == 6
    x = torch.randn(2, 11, DIM, dtype=torch.float64, requires_grad=True)
    wide(x).sum().backward()
    assert torch.isfinite(wide.feature_map.weight.grad).all()


def test_bad_hyperparameters():
    with pytest.raises(ValueError) as err:
        get_op("linear")(DIM, feature_map="cosine")
    for name in FEATURE_MAPS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="chunk_size"):
        get_op("linear")(DIM, chunk_size=0)
    with pytest.raises(ValueError, match="feature_dim"):
        get_op("linear")(DIM, feature_dim=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("feature_map", ["elu1", "hedgehog"])
def test_flops_match_flop_counter(causal, feature_map):
    op = get_op("linear")(64, causal=causal, feature_map=feature_map)
    L = 200  # not a multiple of chunk_size
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, L, 64))
    counted = counter.get_total_flops()
    assert abs(op.flops(L) - counted) <= 0.1 * counted  # formula adds prefix-sum adds only


def test_causal_flops_grow_linearly():
    op = get_op("linear")(64, causal=True)
    assert op.flops(8192) == 2 * op.flops(4096)
