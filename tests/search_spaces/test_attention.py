"""Softmax attention and SQA against plain references."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces import create_op


def naive_attention(op, x: torch.Tensor, causal: bool) -> torch.Tensor:
    q, k, v = op.project(x)
    k, v = op.expand_kv(k), op.expand_kv(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(op.head_dim)  # (B, H, L, L)
    if causal:
        L = x.shape[1]
        scores = scores.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), float("-inf"))
    return op.merge(scores.softmax(-1) @ v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_softmax_matches_naive(causal: bool, kv_heads: int) -> None:
    torch.manual_seed(0)
    op = create_op(
        "softmax", 32, causal=causal, heads=4, kv_heads=kv_heads, head_dim=12, rope_theta=1e4
    )
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    op = op.double()
    torch.testing.assert_close(op(x), naive_attention(op, x, causal), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_sqa_with_all_query_heads_equals_softmax(causal: bool) -> None:
    torch.manual_seed(0)
    soft = create_op("softmax", 32, causal=causal, heads=4, kv_heads=2, head_dim=8, qkv_bias=True)
    sqa = create_op(
        "sqa", 32, causal=causal, heads=4, q_heads=4, kv_heads=2, head_dim=8, qkv_bias=True
    )
    sqa.load_state_dict(soft.state_dict())
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :3] = False
    torch.testing.assert_close(
        sqa(x, padding_mask=mask), soft(x, padding_mask=mask), rtol=0, atol=0
    )


def test_sqa_shapes_and_flops_scale_with_query_heads() -> None:
    sqa = create_op("sqa", 256, causal=True, heads=8, head_dim=32)  # symmetric default: 4 and 4
    assert sqa.q_proj.out_features == 4 * 32 and sqa.k_proj.out_features == 4 * 32
    assert sqa.o_proj.in_features == 4 * 32 and sqa.o_proj.out_features == 256
    soft = create_op("softmax", 256, causal=True, heads=8, head_dim=32)
    ratio = sqa.flops(8192) / soft.flops(8192)
    assert 0.45 < ratio < 0.55  # attention dominates at long length; it scales with q_heads


def test_bad_head_counts_are_reported() -> None:
    with pytest.raises(ValueError, match="heads % kv_heads == 0"):
        create_op("softmax", 32, heads=4, kv_heads=3)
    with pytest.raises(ValueError, match="q_heads <= heads"):
        create_op("sqa", 32, heads=4, q_heads=8)


def test_attention_flop_formula_matches_counter_on_the_naive_form() -> None:
    """The counter sees 0 FLOPs inside CPU SDPA, so check the formula on explicit matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    L = 40
    full = create_op("softmax", 32, causal=False, heads=4, kv_heads=2, head_dim=8)
    x = torch.randn(1, L, 32)
    with FlopCounterMode(display=False) as counter:
        naive_attention(full, x, causal=False)
    assert counter.get_total_flops() == full.flops(L)
    causal = create_op("softmax", 32, causal=True, heads=4, kv_heads=2, head_dim=8)
    assert causal.sdpa_flops(L) * 2 * L == full.sdpa_flops(L) * (L + 1)  # L(L+1)/2 of L² pairs
