"""swa_linear (LoLCATs' sliding window + linear hybrid) against a dense reference, sinks included."""

from __future__ import annotations

import pytest
import torch

from search_spaces.ops.hybrid_attention import SlidingWindowLinearAttention


def dense_reference(op: SlidingWindowLinearAttention, x: torch.Tensor, pm: torch.Tensor):
    """The class docstring's equation with (L x L) masks: softmax inside W(i) (window plus
    sinks), φ(q)·φ(k) outside, one normalisation."""
    q, k, v = op.project(x, None)
    k, v = op.expand_kv(k), op.expand_kv(v)
    L = x.shape[1]
    pos = torch.arange(L)
    offset = pos[:, None] - pos[None]
    if op.causal:
        band = (offset >= 0) & (offset < op.window)
        earlier = offset >= 0
    else:
        band = offset.abs() <= op.window // 2
        earlier = torch.ones(L, L, dtype=torch.bool)
    band = band | ((pos[None] < op.sinks) & earlier)
    keys = pm[:, None, None, :]
    inside, outside = band & keys, earlier & ~band & keys  # (B, 1, L, L)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    s = s.masked_fill(~inside, float("-inf"))
    m = s.amax(-1, keepdim=True).clamp(min=-1e30)
    sm = torch.exp(s - m).nan_to_num(0.0) * inside
    lin = (op.feature_map(q) @ op.feature_map(k).transpose(-1, -2)) * outside
    gamma = torch.sigmoid(op.window_factor)[None, :, None, None]
    w = gamma * sm + lin
    y = (w @ v) / (w.sum(-1, keepdim=True) + op.eps)
    return op.merge(y)


@pytest.mark.parametrize(
    "causal,sinks,L",
    [
        (False, 0, 37),
        (True, 0, 37),
        (False, 1, 37),
        (False, 3, 41),
        (False, 2, 5),
        (False, 4, 3),
        (True, 1, 37),
        (True, 3, 41),
    ],
)
def test_equals_dense_reference_with_padding(causal: bool, sinks: int, L: int) -> None:
    torch.manual_seed(0)
    op = SlidingWindowLinearAttention(
        32, causal=causal, heads=4, kv_heads=2, window=8, block_size=4, sinks=sinks
    ).eval()
    with torch.no_grad():
        op.window_factor.normal_()  # distinct γ per head
    x = torch.randn(3, L, 32)
    pm = torch.ones(3, L, dtype=torch.bool)
    pm[1, L - 2 :] = False  # right padding, as encoders are padded
    pm[2, max(1, L // 2) :] = False
    with torch.no_grad():
        got = op(x, padding_mask=pm)
        want = dense_reference(op, x, pm)
    torch.testing.assert_close(got[pm], want[pm], atol=1e-5, rtol=1e-4)


def test_sinks_change_far_queries_only() -> None:
    """With sinks, a query whose window already holds position 0 is unchanged; far ones move."""
    torch.manual_seed(1)
    kw = dict(heads=2, window=8, block_size=4)
    plain = SlidingWindowLinearAttention(16, **kw).eval()
    sinky = SlidingWindowLinearAttention(16, sinks=1, **kw).eval()
    sinky.load_state_dict(plain.state_dict())
    x = torch.randn(1, 30, 16)
    with torch.no_grad():
        a, b = plain(x), sinky(x)
    near = torch.arange(30) <= 4  # |i - 0| <= window // 2
    torch.testing.assert_close(a[:, near], b[:, near])
    assert (a[:, ~near] - b[:, ~near]).abs().amax(-1).min() > 1e-6


def test_negative_sinks_are_an_error() -> None:
    with pytest.raises(ValueError, match="sinks >= 0"):
        SlidingWindowLinearAttention(16, heads=2, sinks=-1)
