"""Selective state-space mixer in the Mamba-2 form, computed with the chunked SSD scan."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops.base import Operator, linear_flops, zero_padded
from search_spaces.registry import register_op


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = a[..., j+1] + ... + a[..., i]`` for ``j <= i``, ``-inf`` above the diagonal.

    Masked cumulative sum (no difference of two cumsums), so it stays exact for long chunks.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    a = a[..., None].expand(*a.shape, T)  # (..., T, T): a_i at [i, j]
    a = a.masked_fill(~ones.tril(-1), 0)  # keep a_i for i > j
    return a.cumsum(-2).masked_fill_(~ones.tril(), -math.inf)


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked scan of ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ``, ``y_t = h_t C_t + D x_t``.

    Shapes: x (b, L, h, p), dt (b, L, h), A and D (h,), B and C (b, L, n) shared by all heads;
    returns y (b, L, h, p). The "minimal SSD" algorithm of Dao & Gu (2024): quadratic attention-like
    form inside each chunk, a linear recurrence over chunk states between chunks. The tail is
    zero-padded with dt = 0, which neither decays nor feeds the state. ``initial_state``
    (b, h, n, p) is the state before the first token (zero by default); with
    ``return_final_state`` the state after the last token is returned too (for decoding).
    """
    b, L, h, p = x.shape
    cs = min(chunk_size, L)
    c = math.ceil(L / cs)
    pad = c * cs - L
    xdt = (x * dt[..., None]).transpose(1, 2)  # (b, h, L, p): head-major, so products are bmm
    xdt = (F.pad(xdt, (0, 0, 0, pad)) if pad else xdt.contiguous()).view(b, h, c, cs, p)
    dA = F.pad((dt * A).transpose(1, 2), (0, pad)).view(b, h, c, cs)  # (b, h, c, l)
    dA_cs = dA.cumsum(-1)
    B, C = (F.pad(t, (0, 0, 0, pad)).view(b, 1, c, cs, -1) for t in (B, C))  # (b, 1, c, l, n)

    # 1. intra-chunk outputs: (C_l . B_s) exp(dA_{s+1} + ... + dA_l) for s <= l
    scores = (C @ B.transpose(-1, -2)) * torch.exp(segsum(dA))  # (b, h, c, l, s)
    y = scores @ xdt  # (b, h, c, l, p)
    # 2. state at the end of each chunk from the chunk's own inputs
    decay_to_end = torch.exp(dA_cs[..., -1:] - dA_cs)[..., None]  # (b, h, c, l, 1)
    states = B.transpose(-1, -2) @ (xdt * decay_to_end)  # (b, h, c, n, p)
    # 3. recurrence over chunk states (sequential: linear in the number of chunks)
    chunk_decay = torch.exp(dA_cs[..., -1])[..., None, None]  # (b, h, c, 1, 1)
    h_t = torch.zeros_like(states[:, :, 0]) if initial_state is None else initial_state
    carried = []  # h_t: (b, h, n, p)
    for i in range(c):
        carried.append(h_t)
        h_t = h_t * chunk_decay[:, :, i] + states[:, :, i]
    carried = torch.stack(carried, dim=2)  # (b, h, c, n, p): state entering each chunk
    # 4. carried state -> outputs, decayed to each position
    y = torch.addcmul(y, C @ carried, torch.exp(dA_cs)[..., None])  # (b, h, c, l, p)
    y = y.view(b, h, c * cs, p)[:, :, :L].transpose(1, 2)  # (b, L, h, p)
    y = torch.addcmul(y, x, D[:, None])
    return (y, h_t) if return_final_state else y


def _flip(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.flip(dim)


def _identity(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t


def ssd_scan_flops(seq_len: int, chunk_size: int, heads: int, head_dim: int, d_state: int) -> int:
    """FLOPs of the four batched matmuls of ``ssd_scan`` (elementwise decays not counted)."""
    cs = min(chunk_size, seq_len)
    padded = math.ceil(seq_len / cs) * cs
    intra = 2 * padded * cs * (d_state + heads * head_dim)  # C.B scores, then scores @ x
    states = 2 * 2 * padded * d_state * heads * head_dim  # chunk states and state -> output
    return intra + states


class SSMState(NamedTuple):
    """Decoding state of ``ssm``, constant in size: the last ``conv_kernel - 1`` conv inputs
    (B, C, K - 1) and the SSM state (B, h, n, p)."""

    conv: torch.Tensor
    ssm: torch.Tensor


@register_op("ssm", kind="mixer")
class SelectiveSSM(Operator):
    """Mamba-2 selective SSM mixer (Dao & Gu 2024, "Transformers are SSMs", SSD form).

    ``z, x, B, C, dt = in_proj(u)``; ``x, B, C = silu(conv(x, B, C))`` with a short causal
    depthwise conv; ``dt = softplus(dt + dt_bias)``; per head a scalar ``A = -exp(A_log)`` and
    ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ``, ``y_t = h_t C_t + D x_t`` (one B/C group);
    output ``out_proj(RMSNorm(y * silu(z)))``. Parameter names and the in_proj layout follow the
    reference Mamba-2 module (ngroups = 1).

    ``causal=False`` is bidirectional: ``y`` is the sum of the forward conv + scan and the same
    conv + scan (same parameters) run on the reversed sequence, so each direction's conv is causal
    in its own scan direction; a token's own input thus enters ``y`` once per direction.
    Padded positions have their x/B/C inputs zeroed before the conv and ``dt = 0``: they neither
    inject input into the state nor decay it.
    """

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        heads: int = 4,
        head_dim: int | None = None,
        expand: int = 2,
        d_state: int = 16,
        conv_kernel: int = 4,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        sizes = dict(heads=heads, expand=expand, d_state=d_state, conv_kernel=conv_kernel)
        for name, value in dict(sizes, chunk_size=chunk_size).items():
            if value < 1:
                raise ValueError(f"`{name} >= 1` must hold for ssm, but got {name}={value}")
        if head_dim is None:
            if dim * expand % heads:
                raise ValueError(
                    f"`dim * expand % heads == 0` must hold for ssm, but got {dim=}, {expand=}, "
                    f"{heads=}"
                )
            head_dim = dim * expand // heads
        if head_dim < 1:
            raise ValueError(f"`head_dim >= 1` must hold for ssm, but got {head_dim=}")
        self.dim, self.causal = dim, causal
        self.heads, self.head_dim, self.d_state = heads, head_dim, d_state
        self.conv_kernel, self.chunk_size = conv_kernel, chunk_size
        self.d_inner = d_inner = heads * head_dim
        self.conv_dim = conv_dim = d_inner + 2 * d_state
        self.in_proj = nn.Linear(dim, 2 * d_inner + 2 * d_state + heads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, conv_kernel, groups=conv_dim)
        # Mamba's init: dt log-uniform in [1e-3, 1e-1] through the inverse softplus, A in [1, 16].
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(1, 16).log())
        self.D = nn.Parameter(torch.ones(heads))
        self.norm = nn.RMSNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.directions = (False,) if causal else (False, True)  # True: scan the reversed sequence

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        w_z, w_xBC, w_dt = self.in_proj.weight.split([self.d_inner, self.conv_dim, self.heads])
        # x/B/C projected straight into the conv's (B, C, L) layout: saves a strided copy.
        xBC = zero_padded((w_xBC @ x.transpose(1, 2)).transpose(1, 2), padding_mask)  # (B, L, C)
        dt = zero_padded(F.softplus(F.linear(x, w_dt) + self.dt_bias), padding_mask)  # (B, L, h)
        y = sum(self._direction(xBC.transpose(1, 2), dt, reverse) for reverse in self.directions)
        return self.out_proj(self.norm(y * F.silu(F.linear(x, w_z))))  # (B, L, D)

    def _direction(self, xBC: torch.Tensor, dt: torch.Tensor, reverse: bool) -> torch.Tensor:
        """Conv + scan along the sequence, or along its reverse (output in original order).

        xBC: (B, C, L) conv inputs, dt: (B, L, h); returns (B, L, d_inner)."""
        flip = _flip if reverse else _identity
        xBC, dt = flip(xBC, -1), flip(dt, 1)
        B_, _, L = xBC.shape
        xBC = F.silu(self.conv1d(F.pad(xBC, (self.conv_kernel - 1, 0)))).transpose(1, 2)
        xs, Bm, Cm = xBC.split([self.d_inner, self.d_state, self.d_state], dim=-1)  # (B, L, .)
        xs = xs.reshape(B_, L, self.heads, self.head_dim)  # (B, L, h, p)
        A = -torch.exp(self.A_log)
        y = ssd_scan(xs, dt, A, Bm, Cm, self.D, self.chunk_size)
        return flip(y.reshape(B_, L, self.d_inner), 1)  # (B, L, d_inner)

    def step(
        self,
        x: torch.Tensor,
        state: SSMState | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SSMState]:
        """Causal incremental decoding (``Operator.step``) with a constant-size state,
        ``SSMState``. ``positions`` is unused."""
        if not self.causal:
            raise ValueError("ssm.step needs causal=True")
        w_z, w_xBC, w_dt = self.in_proj.weight.split([self.d_inner, self.conv_dim, self.heads])
        xBC = zero_padded(F.linear(x, w_xBC), padding_mask).transpose(1, 2)  # (B, C, T)
        dt = zero_padded(F.softplus(F.linear(x, w_dt) + self.dt_bias), padding_mask)  # (B, T, h)
        B_, _, T = xBC.shape
        K = self.conv_kernel
        past = xBC.new_zeros(B_, self.conv_dim, K - 1) if state is None else state.conv
        xBC = torch.cat([past, xBC], dim=-1)  # (B, C, K - 1 + T)
        conv_state = xBC[..., xBC.shape[-1] - (K - 1) :]
        xBC = F.silu(self.conv1d(xBC)).transpose(1, 2)  # (B, T, C)
        xs, Bm, Cm = xBC.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        xs = xs.reshape(B_, T, self.heads, self.head_dim)  # (B, T, h, p)
        A = -torch.exp(self.A_log)
        h0 = None if state is None else state.ssm
        y, h = ssd_scan(xs, dt, A, Bm, Cm, self.D, self.chunk_size, h0, return_final_state=True)
        y = y.reshape(B_, T, self.d_inner)
        return self.out_proj(self.norm(y * F.silu(F.linear(x, w_z)))), SSMState(conv_state, h)

    def fused_segments(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        n, d = self.d_state, self.d_inner
        conv = (0, (d, n, n))  # channels of (x, B, C)
        return {
            "in_proj.weight": (0, (d, d, n, n, self.heads)),  # rows of (z, x, B, C, dt)
            "conv1d.weight": conv,
            "conv1d.bias": conv,
        }

    def flops(self, seq_len: int) -> int:
        proj = linear_flops(self.dim, self.in_proj.out_features, seq_len)
        proj += linear_flops(self.d_inner, self.dim, seq_len)
        conv = 2 * self.conv_kernel * self.conv_dim * seq_len
        scan = ssd_scan_flops(seq_len, self.chunk_size, self.heads, self.head_dim, self.d_state)
        return proj + len(self.directions) * (conv + scan)
