"""The operator contract (``search_spaces.ops.base.Operator``) as one public check, for the
platform's operators and for yours::

    import my_ops  # registers "shift"
    from search_spaces.testing import check_operator

    check_operator("shift")  # in a test: raises OperatorContractError naming what is broken
    check_operator("shift", hparams={"kernel": 5}, causal=True)

For each mode (``causal=False`` and, where the operator supports it, ``causal=True``) it builds
the operator in float64 and checks: output shape ``(B, L, D)`` and finiteness; inputs left
unmodified; gradients reaching the input and every parameter; determinism under a seed; padded
positions contributing nothing; causality (a later token never changes an earlier output);
``flops`` a non-negative int that does not shrink with length, and its ``counted_flops`` part
within ``flops_rtol`` of ``torch.utils.flop_counter.FlopCounterMode``; and, for an operator with
``step``, that decoding a sequence token by token (and as a prompt, then token by token) gives
the outputs of ``forward``, with the state a ``NamedTuple``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ops.base import Operator
from search_spaces.registry import create_op, get_op

__all__ = ["OperatorContractError", "check_operator"]

FLOPS_RTOL = 0.02  # every library operator's counted_flops equals the counter's count exactly
TOL = 1e-9  # float64: equal up to summation order


class OperatorContractError(AssertionError):
    """An operator breaks the contract of ``search_spaces.ops.base.Operator``."""


def check_operator(
    name: str | type[nn.Module],
    *,
    hparams: Mapping[str, Any] | None = None,
    causal: bool | None = None,
    dim: int = 32,
    seq_len: int = 19,
    flops_rtol: float = FLOPS_RTOL,
) -> None:
    """Check the registered operator ``name`` (or an operator class) against the contract;
    raise ``OperatorContractError`` naming the operator, the mode and the broken condition.

    ``hparams`` are passed to the constructor; ``causal`` checks one mode only (default: both,
    causal only where ``supports_causal``). ``seq_len`` is best not a multiple of the
    operator's chunk or block sizes (19 is prime)."""
    cls = get_op(name)
    label = f"operator {getattr(cls, 'op_name', cls.__name__)!r}"
    if not (isinstance(cls, type) and issubclass(cls, Operator)):
        raise OperatorContractError(f"{label} must subclass search_spaces.ops.base.Operator")
    if causal and not cls.supports_causal:
        raise OperatorContractError(f"{label} has supports_causal=False: it has no causal mode")
    if causal is not None:
        modes = [causal]
    else:
        modes = [False, True] if cls.supports_causal else [False]
    for mode in modes:
        _Check(cls, f"{label} (causal={mode})", mode, dict(hparams or {}), dim, seq_len).run(
            flops_rtol
        )


class _Check:
    """The checks of one operator in one mode; each raises ``OperatorContractError``."""

    def __init__(
        self, cls: type[Operator], label: str, causal: bool, hparams: dict, dim: int, seq_len: int
    ) -> None:
        self.cls, self.label, self.causal, self.hparams = cls, label, causal, hparams
        self.dim, self.L = dim, seq_len
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(2, seq_len, dim, generator=g, dtype=torch.float64)  # (B, L, D)
        self.mask = torch.ones(2, seq_len, dtype=torch.bool)
        self.mask[0, : seq_len // 4] = False  # left padding
        self.mask[1, seq_len - seq_len // 5 :] = False  # right padding

    def fail(self, message: str) -> OperatorContractError:
        return OperatorContractError(f"{self.label}: {message}")

    def make(self, seed: int = 0) -> Operator:
        torch.manual_seed(seed)
        try:
            op = create_op(self.cls, self.dim, causal=self.causal, **self.hparams)
        except (TypeError, ValueError) as e:
            raise self.fail(f"cannot be built with {self.hparams or 'its defaults'}: {e}") from e
        return op.double()

    def run(self, flops_rtol: float) -> None:
        op = self.make()
        self.shape_inputs_and_gradients(op)
        self.deterministic()
        self.padding(op)
        if self.causal:
            self.causality(op)
        self.flops(op, flops_rtol)
        if self.causal and op.has_step():
            self.step(op)

    def shape_inputs_and_gradients(self, op: Operator) -> None:
        for pm in (None, self.mask):
            x = self.x.clone().requires_grad_(True)
            x_before, pm_before = x.detach().clone(), None if pm is None else pm.clone()
            op.zero_grad(set_to_none=True)
            y = op(x, padding_mask=pm)
            what = "without padding_mask" if pm is None else "with padding_mask"
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise self.fail(f"forward {what} must return shape {tuple(x.shape)}, got {got}")
            if not torch.isfinite(y).all():
                raise self.fail(f"forward {what} returned non-finite values")
            mask_changed = pm is not None and not torch.equal(pm, pm_before)
            if not torch.equal(x.detach(), x_before) or mask_changed:
                raise self.fail(f"forward {what} modified its input in place")
            y.square().sum().backward()
            if x.grad is None or not torch.isfinite(x.grad).all():
                raise self.fail(f"no finite gradient reaches the input ({what})")
            for pname, p in op.named_parameters():
                if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
                    raise self.fail(f"no finite gradient reaches parameter {pname!r} ({what})")

    def deterministic(self) -> None:
        y1 = self.make(seed=3)(self.x, padding_mask=self.mask)
        y2 = self.make(seed=3)(self.x, padding_mask=self.mask)
        if not torch.equal(y1, y2):
            raise self.fail(
                "two copies built under the same seed give different outputs for the same "
                f"input (max |Δ| {_max_diff(y1, y2):.3g})"
            )

    def padding(self, op: Operator) -> None:
        noise = torch.randn(self.x.shape, generator=torch.Generator().manual_seed(2)).double()
        x2 = torch.where(self.mask[..., None], self.x, 5 * noise)
        y1, y2 = op(self.x, padding_mask=self.mask), op(x2, padding_mask=self.mask)
        if not _close(y1[self.mask], y2[self.mask]):
            raise self.fail(
                "changing padded tokens changed the outputs at real tokens (max |Δ| "
                f"{_max_diff(y1[self.mask], y2[self.mask]):.3g}); padded positions "
                "(padding_mask False) must contribute nothing"
            )

    def causality(self, op: Operator) -> None:
        noise = torch.randn(self.x.shape, generator=torch.Generator().manual_seed(4)).double()
        y = op(self.x)
        for t in sorted({0, self.L // 3, self.L - 2}):
            x2 = self.x.clone()
            x2[:, t + 1 :] = 3 * noise[:, t + 1 :]
            y2 = op(x2)
            if not _close(y[:, : t + 1], y2[:, : t + 1]):
                raise self.fail(
                    f"changing the tokens after position {t} changed the outputs at positions "
                    f"<= {t} (max |Δ| {_max_diff(y[:, : t + 1], y2[:, : t + 1]):.3g}); with "
                    "causal=True an output may depend only on tokens up to its own position"
                )

    def flops(self, op: Operator, rtol: float) -> None:
        short, long = op.flops(64), op.flops(256)
        if not (isinstance(short, int) and isinstance(long, int)) or min(short, long) < 0:
            raise self.fail(f"flops(seq_len) must be a non-negative int, got {short!r}, {long!r}")
        if long < short:
            raise self.fail(f"flops shrinks with length: flops(64)={short}, flops(256)={long}")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            op(self.x[:1])
        counted, claimed = counter.get_total_flops(), op.counted_flops(self.L)
        if abs(claimed - counted) > rtol * counted:
            raise self.fail(
                f"counted_flops({self.L}) = {claimed} (flops = {op.flops(self.L)}), but "
                f"torch.utils.flop_counter counts {counted} for one sequence of {self.L} tokens "
                f"(tolerance {rtol:.0%}); counted_flops is the part of flops the counter sees: "
                "no scaled_dot_product_attention on CPU, FFTs or elementwise work"
            )

    def step(self, op: Operator) -> None:
        """Token by token, and a prompt then token by token, equal ``forward``."""
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)  # positions of real tokens, as generate()
        kw = {"positions": pos} if op.uses_positions else {}
        ref = op(self.x, padding_mask=self.mask, **kw)
        prompt = self.L // 3
        splits = {
            "token by token": [(t, t + 1) for t in range(self.L)],
            f"a {prompt}-token prompt, then token by token": [(0, prompt)]
            + [(t, t + 1) for t in range(prompt, self.L)],
        }
        for how, pieces in splits.items():
            ys, state = [], None
            for a, b in pieces:
                y, state = op.step(
                    self.x[:, a:b], state, padding_mask=self.mask[:, a:b], positions=pos[:, a:b]
                )
                if state is not None and not _is_named_tuple(state):
                    raise self.fail(
                        "step must return its state as a NamedTuple (or None), got "
                        f"{type(state).__name__}"
                    )
                ys.append(y)
            got = torch.cat(ys, dim=1)
            if got.shape != ref.shape:
                raise self.fail(
                    f"step ({how}) returned {tuple(got.shape)} in all, not {tuple(ref.shape)}"
                )
            if not _close(got[self.mask], ref[self.mask]):
                raise self.fail(
                    f"step ({how}) differs from forward on the whole sequence at real tokens "
                    f"(max |Δ| {_max_diff(got[self.mask], ref[self.mask]):.3g})"
                )


def _is_named_tuple(state: Any) -> bool:
    return isinstance(state, tuple) and hasattr(state, "_fields")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=TOL, atol=TOL)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max()) if a.numel() else 0.0
