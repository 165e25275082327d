"""The Hyena-style ``gated_conv`` mixer: FFT long convolution against a Toeplitz product, the
whole operator against a reference forward, causality, padding, filter lengths and FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ops.gated_conv import GatedConv, fft_long_conv

TOL = dict(atol=1e-5, rtol=1e-5)


def toeplitz_conv(u, kernel):
    """y[t] = sum_s k[t - s] u[s] with an explicit (L, L) Toeplitz matrix per channel.

    kernel (D, L): offsets 0..L-1; (D, 2L-1): offsets -(L-1)..L-1."""
    L = u.shape[-1]
    first = kernel.shape[-1] - L  # index of offset 0
    t = torch.arange(L)
    offsets = t[:, None] - t[None, :]  # (L, L): t - s
    valid = (offsets >= -first).to(u)
    T = kernel[:, (offsets + first).clamp(min=0)] * valid  # (D, L, L)
    return torch.einsum("dts,bds->bdt", T, u)


def reference_forward(op, x, padding_mask=None):
    """The operator from its parameters, with both convolutions written as direct sums."""
    keep = torch.ones_like(x[..., :1]) if padding_mask is None else padding_mask[..., None].to(x)
    B, L, D = x.shape
    u = (x @ op.in_proj.weight.T + op.in_proj.bias) * keep  # (B, L, 3D)
    left, K, w = op.short_pad[0], op.short_kernel, op.short_conv.weight[:, 0]  # w (3D, K)
    padded = F.pad(u, (0, 0, left, K - 1 - left))
    u = sum(w[:, k] * padded[:, k : k + L] for k in range(K)) + op.short_conv.bias
    v, x1, x2 = u.chunk(3, dim=-1)
    s = (x1 * v * keep).transpose(1, 2)  # (B, D, L)
    y = toeplitz_conv(s, op.filter(L)) + op.bias[:, None] * s
    return (x2 * y.transpose(1, 2)) @ op.out_proj.weight.T + op.out_proj.bias


def make_op(causal, filter="implicit", seed=0, **hparams):
    torch.manual_seed(seed)
    return GatedConv(8, causal=causal, filter=filter, max_len=32, **hparams).double()


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("L", [1, 2, 7, 16, 33])
def test_fft_long_conv_equals_toeplitz_product(two_sided, L):
    u = torch.randn(2, 3, L, dtype=torch.float64)
    kernel = torch.randn(3, 2 * L - 1 if two_sided else L, dtype=torch.float64)
    torch.testing.assert_close(fft_long_conv(u, kernel), toeplitz_conv(u, kernel), **TOL)


def test_fft_long_conv_is_linear_not_circular():
    u = torch.zeros(1, 1, 8, dtype=torch.float64)
    u[..., -1] = 1.0  # an impulse at the last position must not wrap around to the start
    out = fft_long_conv(u, torch.ones(1, 8, dtype=torch.float64))
    torch.testing.assert_close(out[..., :-1], torch.zeros(1, 1, 7, dtype=torch.float64))


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 6, 19])
def test_operator_matches_reference_forward(causal, filter, L):
    op = make_op(causal, filter)
    x = torch.randn(2, L, 8, dtype=torch.float64)
    torch.testing.assert_close(op(x), reference_forward(op, x), **TOL)


@pytest.mark.parametrize("short_kernel", [1, 2, 4])
def test_even_and_trivial_short_kernels(short_kernel):
    op = make_op(False, short_kernel=short_kernel)
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(op(x), reference_forward(op, x), **TOL)


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
def test_causal_outputs_ignore_the_future(filter):
    op = make_op(True, filter)
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] = torch.randn_like(x2[:, 11:])
    torch.testing.assert_close(op(x)[:, :11], op(x2)[:, :11], atol=1e-12, rtol=0)
    assert not torch.allclose(op(x)[:, 11:], op(x2)[:, 11:])


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
def test_two_sided_outputs_see_the_future(filter):
    op = make_op(False, filter)
    x = torch.randn(1, 20, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 15:] += 1.0
    assert not torch.allclose(op(x)[:, :5], op(x2)[:, :5])


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
@pytest.mark.parametrize("causal", [True, False])
def test_padded_positions_contribute_nothing(causal, filter):
    op = make_op(causal, filter)
    x = torch.randn(2, 19, 8, dtype=torch.float64)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[0, :6] = False  # left padding
    mask[1, 9:12] = False  # a hole inside
    mask[1, 17:] = False  # right padding
    x2 = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    y, y2 = op(x, padding_mask=mask), op(x2, padding_mask=mask)
    torch.testing.assert_close(y[mask], y2[mask], **TOL)
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y, reference_forward(op, x, mask), **TOL)


def test_implicit_filter_extends_beyond_max_len():
    op = make_op(True)  # max_len = 32
    x = torch.randn(1, 80, 8, dtype=torch.float64)
    y = op(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, :20], op(x[:, :20]), **TOL)  # same filter taps at any length
    assert op.filter(80).shape == (8, 80)
    assert make_op(False).filter(80).shape == (8, 159)


@pytest.mark.parametrize("causal", [True, False])
def test_explicit_filter_rejects_sequences_longer_than_max_len(causal):
    op = make_op(causal, "explicit")
    assert op.filter.weight.shape == ((8, 32) if causal else (8, 63))
    op(torch.randn(1, 32, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"seq_len=33.*max_len=32"):
        op(torch.randn(1, 33, 8, dtype=torch.float64))


def test_unknown_filter_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="filter"):
        GatedConv(8, filter="fourier")
    with pytest.raises(ValueError, match="short_kernel"):
        GatedConv(8, short_kernel=0)


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
@pytest.mark.parametrize("causal", [True, False])
def test_matmul_flops_match_flop_counter(causal, filter):
    op, L = GatedConv(32, causal=causal, filter=filter, max_len=128), 100
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, L, 32))
    counted = counter.get_total_flops()  # counts linears and convs, not FFTs or gating
    assert abs(op.matmul_flops(L) - counted) <= 0.15 * counted  # tolerance 15 %; equal in practice


def test_flops_grow_as_l_log_l():
    op = GatedConv(32, causal=True, filter="explicit", max_len=1 << 16)
    growth = [op.flops(2 * L) - 2 * op.flops(L) for L in (1024, 2048, 4096)]
    assert all(g > 0 for g in growth)  # superlinear
    # c n log2 n has f(2L) - 2 f(L) = 2 c n: doubling with n (up to the n/2 + 1 product bins)
    assert growth[1] == pytest.approx(2 * growth[0], rel=1e-3)
    assert growth[2] == pytest.approx(2 * growth[1], rel=1e-3)
