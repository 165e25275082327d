"""Pooling token mixer (PoolFormer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from search_spaces.ops.base import Operator
from search_spaces.registry import register_op


@register_op("pooling", kind="mixer")
class Pooling(Operator):
    """PoolFormer token mixer (Yu et al. 2022, "MetaFormer is actually what you need").

    Equation: ``out = AvgPool(x) - x`` (the ``- x`` because the block adds the residual).
    Windows, stride 1, averaging over the tokens that exist (``count_include_pad=False``):
    - 1-D causal: the last ``pool_size`` positions ``t - pool_size + 1 .. t``;
    - 1-D non-causal: a centred window ``t - pool_size // 2 .. t + (pool_size - 1) // 2``;
    - 2-D (``grid=(H, W)``, tokens row-major, ``L == H * W``): a ``pool_size x pool_size``
      window on the token grid, as PoolFormer. A 2-D window sees both sides, so no causal form.
    With a padding mask the average runs over real tokens only: pool ``x * mask`` and ``mask``
    and divide, so padded tokens contribute nothing.
    """

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        pool_size: int = 3,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"`pool_size >= 1` must hold, but got {pool_size=}")
        if grid is not None:
            grid = tuple(int(g) for g in grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"`grid` must be two positive ints (H, W), but got {grid=}")
            if causal:
                raise ValueError(
                    f"pooling with a 2-D {grid=} cannot be causal: its window covers tokens "
                    "after each position; use grid=None for the causal 1-D form"
                )
        self.dim, self.causal, self.pool_size, self.grid = dim, causal, pool_size, grid
        left = pool_size - 1 if causal else pool_size // 2
        right = pool_size - 1 - left
        # F.pad order for (B, C, H, W) is (W_left, W_right, H_top, H_bottom).
        self._pad = (left, right, left, right) if grid else (left, right, 0, 0)
        self._kernel = (pool_size, pool_size) if grid else (1, pool_size)

    def _window_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over each window of ``t`` (B, C, H, W), zero outside; same shape out."""
        return F.avg_pool2d(F.pad(t, self._pad), self._kernel, stride=1, divisor_override=1)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        H, W = self.grid or (1, L)
        if H * W != L:
            raise ValueError(
                f"`seq_len == H * W` must hold for 2-D pooling, but got seq_len={L}, {self.grid=}"
            )
        if padding_mask is None:
            m = x.new_ones(B, L, 1)
        else:
            m = padding_mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
        num = self._window_sum((x * m).transpose(1, 2).reshape(B, D, H, W))  # (B, D, H, W)
        den = self._window_sum(m.transpose(1, 2).reshape(B, 1, H, W))  # (B, 1, H, W)
        # den == 0 only at a padded token with no real token in its window: output 0 there.
        avg = (num / den.clamp(min=1)).reshape(B, D, L).transpose(1, 2)  # (B, L, D)
        return avg - x

    def flops(self, seq_len: int) -> int:
        """Per element: ``window - 1`` adds, one division, one subtraction (``window`` is
        ``pool_size`` in 1-D, ``pool_size**2`` in 2-D): ``(window + 1) * L * D``. The
        per-position mask pooling (not per channel) is not counted."""
        window = self.pool_size**2 if self.grid else self.pool_size
        return (window + 1) * seq_len * self.dim

    def counted_flops(self, seq_len: int) -> int:
        return 0  # window sums (average pooling) and elementwise work: the flop counter sees none
