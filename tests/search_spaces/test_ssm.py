"""The Mamba-2 ``ssm`` mixer: chunked SSD scan against a sequential recurrence, the whole operator
against a reference forward, causality, padding, bidirectional form and FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ops.ssm import SelectiveSSM, segsum, ssd_scan

TOL = dict(atol=1e-5, rtol=1e-5)


def naive_scan(x, dt, A, B, C, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ, y_t = h_t C_t + D x_t, one step at a time."""
    b, L, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[..., None, None]  # (b, h, 1, 1)
        inject = dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, None, None, :]
        state = decay * state + inject
        ys.append((state * C[:, t, None, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1)  # (b, L, h, p)


def scan_inputs(L, b=2, h=3, p=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)
    dt = torch.rand(b, L, h, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 3 - 0.1
    B = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    D = torch.randn(h, generator=g, dtype=torch.float64)
    return x, dt, A, B, C, D


def reference_direction(op, xBC, dt):
    """Causal depthwise conv written as a loop over taps, SiLU, then the naive recurrence."""
    b, L, _ = xBC.shape
    K, w = op.conv_kernel, op.conv1d.weight[:, 0]  # (C, K)
    padded = F.pad(xBC, (0, 0, K - 1, 0))
    conv = sum(w[:, k] * padded[:, k : k + L] for k in range(K)) + op.conv1d.bias
    xs, Bm, Cm = F.silu(conv).split([op.d_inner, op.d_state, op.d_state], dim=-1)
    xs = xs.reshape(b, L, op.heads, op.head_dim)
    y = naive_scan(xs, dt, -torch.exp(op.A_log), Bm, Cm, op.D)
    return y.reshape(b, L, op.d_inner)


def reference_forward(op, x, padding_mask=None):
    """The operator from its parameters; bidirectional = forward scan + scan of the reversal."""
    keep = torch.ones_like(x[..., :1]) if padding_mask is None else padding_mask[..., None].to(x)
    z, xBC, dt = (x @ op.in_proj.weight.T).split([op.d_inner, op.conv_dim, op.heads], dim=-1)
    xBC, dt = xBC * keep, F.softplus(dt + op.dt_bias) * keep
    y = reference_direction(op, xBC, dt)
    if not op.causal:
        y = y + reference_direction(op, xBC.flip(1), dt.flip(1)).flip(1)
    g = y * F.silu(z)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + op.norm.eps) * op.norm.weight
    return g @ op.out_proj.weight.T


def make_op(causal, seed=0, **hparams):
    torch.manual_seed(seed)
    defaults = dict(heads=2, d_state=4, chunk_size=8)
    return SelectiveSSM(16, causal=causal, **(defaults | hparams)).double()


def test_segsum_is_masked_segment_sum():
    a = torch.randn(2, 6, dtype=torch.float64)
    out = segsum(a)
    for i in range(6):
        for j in range(6):
            expected = a[:, j + 1 : i + 1].sum(-1) if j <= i else torch.full((2,), -torch.inf)
            torch.testing.assert_close(out[:, i, j], expected.to(out))


@pytest.mark.parametrize("L", [1, 5, 16, 23, 48])
def test_chunked_scan_matches_sequential_recurrence(L):
    args = scan_inputs(L)
    torch.testing.assert_close(ssd_scan(*args, chunk_size=16), naive_scan(*args), **TOL)


def test_chunked_scan_is_chunk_size_invariant():
    args = scan_inputs(37)
    ref = ssd_scan(*args, chunk_size=37)
    for cs in (1, 3, 8, 16, 64):
        torch.testing.assert_close(ssd_scan(*args, chunk_size=cs), ref, **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [3, 8, 21])
def test_operator_matches_reference_forward(causal, L):
    op = make_op(causal)
    x = torch.randn(2, L, 16, dtype=torch.float64)
    torch.testing.assert_close(op(x), reference_forward(op, x), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_operator_is_chunk_size_invariant(causal):
    op, x = make_op(causal), torch.randn(1, 29, 16, dtype=torch.float64)
    ref = op(x)
    for cs in (1, 5, 64):
        op.chunk_size = cs
        torch.testing.assert_close(op(x), ref, **TOL)


def test_explicit_head_dim_and_bidirectional_reference():
    op = make_op(False, heads=3, head_dim=5, d_state=3, conv_kernel=2)
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    assert op.d_inner == 15
    torch.testing.assert_close(op(x), reference_forward(op, x), **TOL)


def test_causal_outputs_ignore_the_future():
    op = make_op(True)
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] = torch.randn_like(x2[:, 11:])
    torch.testing.assert_close(op(x)[:, :11], op(x2)[:, :11], atol=1e-12, rtol=0)
    assert not torch.allclose(op(x)[:, 11:], op(x2)[:, 11:])


def test_bidirectional_outputs_see_the_future():
    op = make_op(False)
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 15:] += 1.0
    assert not torch.allclose(op(x)[:, :5], op(x2)[:, :5])


@pytest.mark.parametrize("causal", [True, False])
def test_padded_positions_contribute_nothing(causal):
    op = make_op(causal)
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[0, :6] = False  # left padding
    mask[1, 9:12] = False  # a hole inside
    mask[1, 17:] = False  # right padding
    x2 = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    y, y2 = op(x, padding_mask=mask), op(x2, padding_mask=mask)
    torch.testing.assert_close(y[mask], y2[mask], **TOL)
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y, reference_forward(op, x, mask), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_equals_the_unpadded_sequence(causal):
    op = make_op(causal)
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    padded = torch.cat([torch.randn(1, 4, 16, dtype=torch.float64), x], dim=1)
    mask = torch.arange(14)[None] >= 4
    torch.testing.assert_close(op(padded, padding_mask=mask)[:, 4:], op(x), **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [64, 100])
def test_flops_match_flop_counter(causal, L):
    op = SelectiveSSM(64, causal=causal)
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, L, 64))
    counted = counter.get_total_flops()
    assert abs(op.flops(L) - counted) <= 0.15 * counted  # tolerance 15 %; equal in practice


def test_flops_are_linear_in_length():
    op = SelectiveSSM(64, causal=True)
    assert op.flops(4096) == 2 * op.flops(2048)


@pytest.mark.parametrize(
    "hparams",
    [dict(heads=3), dict(d_state=0), dict(chunk_size=0), dict(conv_kernel=0), dict(head_dim=0)],
)
def test_bad_hyperparameters_raise(hparams):
    with pytest.raises(ValueError, match=next(iter(hparams))):
        SelectiveSSM(32, **hparams)
