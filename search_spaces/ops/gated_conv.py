"""Hyena-style gated long convolution (order 2), with an implicit or an explicit long filter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops.base import Operator, linear_flops, zero_padded
from search_spaces.registry import register_op

FFT_FLOPS_PER_POINT = (
    2.5  # a real FFT of n points: 2.5 n log2 n (half the 5 n log2 n of a complex one)
)


def fft_size(seq_len: int) -> int:
    """Smallest power of two >= 2 L: circular convolution of that size is linear over L taps."""
    return 1 << (2 * seq_len - 1).bit_length()


def fft_long_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear convolution ``y[t] = sum_s k[t - s] u[s]`` over ``L`` positions, by FFT.

    u: (B, D, L). kernel: (D, L) for offsets 0..L-1 (causal), or (D, 2L - 1) for offsets
    -(L-1)..L-1 (two-sided). Both are zero-padded to ``n >= 2L``, negative offsets wrapped to the
    end, so the circular product equals the linear convolution on the L outputs.
    """
    L = u.shape[-1]
    n = fft_size(L)
    positive, negative = kernel[..., -L:], kernel[..., : kernel.shape[-1] - L]
    gap = kernel.new_zeros(*kernel.shape[:-1], n - kernel.shape[-1])
    kernel = torch.cat([positive, gap, negative], dim=-1)  # (D, n): offset o at index o mod n
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel, n=n), n=n)
    return y[..., :L]  # (B, D, L)


def fft_long_conv_flops(channels: int, seq_len: int) -> int:
    """rfft of input and kernel, irfft of the product (2.5 n log2 n each), complex product."""
    n = fft_size(seq_len)
    return int(3 * FFT_FLOPS_PER_POINT * n * math.log2(n) * channels) + 6 * (n // 2 + 1) * channels


def filter_offsets(seq_len: int, causal: bool, like: torch.Tensor) -> torch.Tensor:
    """Offsets 0..L-1 (causal) or -(L-1)..L-1 (two-sided), in ``like``'s dtype and device."""
    first = 0 if causal else 1 - seq_len
    return torch.arange(first, seq_len, dtype=like.dtype, device=like.device)


class Sin(nn.Module):
    """``sin(w x)`` with a learned frequency per feature (Hyena's filter activation)."""

    def __init__(self, features: int, w: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((features,), w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """Hyena's implicit filter: ``h(t) = MLP(features(t)) * exp(-|t| / max_len * |delta|)``.

    Features of an offset t are ``t / max_len`` and ``sin, cos(2 pi f t / max_len)`` for ``bands``
    frequencies; the MLP has sine activations. Defined for any t: ``max_len`` is only the length
    scale (decay target 1e-2 reached between 0.3 and 1.5 max_len, per channel, as in Hyena).
    """

    def __init__(
        self, channels: int, *, max_len: int, causal: bool, hidden: int, bands: int
    ) -> None:
        super().__init__()
        self.max_len, self.causal, self.hidden = max_len, causal, hidden
        self.features, self.channels = 1 + 2 * bands, channels
        self.register_buffer("freqs", torch.linspace(1e-4, bands - 1, bands), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(self.features, hidden),
            Sin(hidden),
            nn.Linear(hidden, hidden),
            Sin(hidden),
            nn.Linear(hidden, channels, bias=False),
        )
        target = math.log(1e-2)
        deltas = torch.linspace(target / 1.5, target / 0.3, channels).abs()
        self.register_buffer("deltas", deltas, persistent=False)

    def forward(self, seq_len: int) -> torch.Tensor:
        t = filter_offsets(seq_len, self.causal, self.deltas)[:, None] / self.max_len  # (m, 1)
        angle = 2 * math.pi * self.freqs * t  # (m, bands)
        h = self.mlp(torch.cat([t, angle.sin(), angle.cos()], dim=-1))  # (m, D)
        return (h * torch.exp(-t.abs() * self.deltas)).T  # (D, m)

    def flops(self, seq_len: int) -> int:
        m = seq_len if self.causal else 2 * seq_len - 1
        sizes = [self.features, self.hidden, self.hidden, self.channels]
        return sum(linear_flops(i, o, m) for i, o in zip(sizes, sizes[1:], strict=False))


class ExplicitFilter(nn.Module):
    """A free filter per channel: ``(D, max_len)`` taps, or ``(D, 2 max_len - 1)`` two-sided."""

    def __init__(
        self, channels: int, *, max_len: int, causal: bool, hidden: int, bands: int
    ) -> None:  # hidden, bands: implicit-filter settings, unused here
        super().__init__()
        self.max_len, self.causal = max_len, causal
        self.zero = 0 if causal else max_len - 1  # index of offset 0
        self.weight = nn.Parameter(torch.randn(channels, self.zero + max_len) / math.sqrt(max_len))

    def forward(self, seq_len: int) -> torch.Tensor:
        if seq_len > self.max_len:
            raise ValueError(
                f"`seq_len <= max_len` must hold for the explicit filter, but got {seq_len=}, "
                f"max_len={self.max_len}"
            )
        first = 0 if self.causal else seq_len - 1
        return self.weight[:, self.zero - first : self.zero + seq_len]  # (D, m)

    def flops(self, seq_len: int) -> int:
        return 0


FILTERS: dict[str, type[nn.Module]] = {"implicit": ImplicitFilter, "explicit": ExplicitFilter}


@register_op("gated_conv", kind="mixer")
class GatedConv(Operator):
    """Hyena operator of order 2 (Poli et al. 2023, "Hyena Hierarchy").

    ``v, x1, x2 = short_conv(in_proj(u))`` (depthwise, ``short_kernel`` taps, causal or centred);
    ``s = x1 * v``; ``y = out_proj(x2 * (h * s + bias * s))`` where ``h * s`` is a long
    convolution over the whole sequence computed by FFT, with the filter ``h`` from ``FILTERS``:
    "implicit" (an MLP of the offset, any length) or "explicit" (``max_len`` free taps).
    ``causal=False``: ``h`` covers offsets -(L-1)..L-1. Padded positions are zeroed before the
    short and the long convolution, so they contribute nothing to other positions.
    """

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        filter: str = "implicit",
        filter_hidden: int = 32,
        filter_bands: int = 8,
        short_kernel: int = 3,
        max_len: int = 1024,
    ) -> None:
        super().__init__()
        if filter not in FILTERS:
            raise ValueError(f"`filter` must be one of {sorted(FILTERS)}, but got {filter=}")
        sizes = dict(filter_hidden=filter_hidden, filter_bands=filter_bands)
        for name, value in dict(sizes, short_kernel=short_kernel, max_len=max_len).items():
            if value < 1:
                raise ValueError(f"`{name} >= 1` must hold for gated_conv, but got {name}={value}")
        self.dim, self.causal, self.short_kernel = dim, causal, short_kernel
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.short_conv = nn.Conv1d(3 * dim, 3 * dim, short_kernel, groups=3 * dim)
        left = short_kernel - 1 if causal else (short_kernel - 1) // 2
        self.short_pad = (left, short_kernel - 1 - left)
        self.filter = FILTERS[filter](
            dim, max_len=max_len, causal=causal, hidden=filter_hidden, bands=filter_bands
        )
        self.bias = nn.Parameter(torch.randn(dim))  # Hyena's per-channel skip "D"
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        # projected straight into the conv's (B, C, L) layout: saves a strided copy
        u = torch.baddbmm(
            self.in_proj.bias[:, None],
            self.in_proj.weight.expand(len(x), -1, -1),
            x.transpose(1, 2),
        )
        u = zero_padded(u.transpose(1, 2), padding_mask).transpose(1, 2)  # (B, 3D, L)
        u = self.short_conv(F.pad(u, self.short_pad)).transpose(1, 2)  # (B, L, 3D)
        v, x1, x2 = u.chunk(3, dim=-1)  # (B, L, D) each
        s = zero_padded(x1 * v, padding_mask).transpose(1, 2)  # (B, D, L)
        y = fft_long_conv(s, self.filter(x.shape[1])) + self.bias[:, None] * s  # (B, D, L)
        return self.out_proj(x2 * y.transpose(1, 2))  # (B, L, D)

    def matmul_flops(self, seq_len: int) -> int:
        """Projections, short convs and the filter MLP: the part FlopCounterMode counts."""
        proj = linear_flops(self.dim, 4 * self.dim, seq_len)  # in_proj (3 D) + out_proj (D)
        short = 2 * self.short_kernel * 3 * self.dim * seq_len
        return proj + short + self.filter.flops(seq_len)

    def counted_flops(self, seq_len: int) -> int:
        return self.matmul_flops(seq_len)  # the flop counter sees no FFT and no gating

    def fused_segments(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        three = (0, (self.dim,) * 3)  # rows/channels of (v, x1, x2)
        names = ("in_proj.weight", "in_proj.bias", "short_conv.weight", "short_conv.bias")
        return dict.fromkeys(names, three)

    def flops(self, seq_len: int) -> int:
        gating = 4 * self.dim * seq_len  # x1 * v, bias * s + conv, x2 * y
        return self.matmul_flops(seq_len) + fft_long_conv_flops(self.dim, seq_len) + gating
