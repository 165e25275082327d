"""The operator contract, checked for every registered operator (a new operator is tested the
moment it is registered) through the public ``search_spaces.testing.check_operator``: shapes,
inputs left alone, gradients, determinism, padding, causality, FLOPs against the flop counter,
and ``step`` against ``forward``; a plugin operator passes it, a broken one fails it clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import search_spaces
from search_spaces import get_op, list_ops
from search_spaces.ops.base import Operator, zero_padded
from search_spaces.registry import _REGISTRY
from search_spaces.testing import OperatorContractError, check_operator

DIM = 32
# hyperparameters that switch on optional paths: rotary positions in step, grouped kv heads, sinks
EXTRA = {
    "softmax": dict(kv_heads=2, rope_theta=1e4),
    "linear": dict(kv_heads=2, feature_map="hedgehog", rope_theta=1e4),
    "swa_linear": dict(window=8, block_size=4, sinks=2, rope_theta=1e4),
}


@pytest.mark.parametrize("name", [n for names in list_ops().values() for n in names])
def test_operator_contract(name: str) -> None:
    check_operator(name)


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_operator_contract_with_optional_paths(name: str) -> None:
    check_operator(name, hparams=EXTRA[name])


def test_step_is_declared_where_implemented() -> None:
    decoders = {n for n in list_ops("mixer") if get_op(n).has_step()}
    assert decoders == {"softmax", "sqa", "linear", "sliding_window", "ssm", "swa_linear"}
    with pytest.raises(NotImplementedError, match="'pooling' has no incremental decoding"):
        search_spaces.create_op("pooling", DIM, causal=True).step(torch.zeros(1, 1, DIM), None)


class TokenShift(Operator):
    """The README's plugin example: out_t = W x_{t-1} (RWKV-style token shift)."""

    def __init__(self, dim: int, *, causal: bool = False) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x, *, padding_mask=None):
        x = zero_padded(x, padding_mask)
        return self.proj(F.pad(x, (0, 0, 1, -1)))  # (B, L, D)

    def flops(self, seq_len: int) -> int:
        return 2 * self.proj.in_features * self.proj.out_features * seq_len


class LeakyShift(TokenShift):
    """Broken: reads the next token even when causal=True."""

    def forward(self, x, *, padding_mask=None):
        x = zero_padded(x, padding_mask)
        return self.proj(F.pad(x, (0, 0, 1, -1)) + F.pad(x, (0, 0, -1, 1)))  # (B, L, D)


@pytest.fixture
def plugin_ops():
    """Register the test's plugin operators as a user's module would, and remove them after."""
    registered = {"test_shift": TokenShift, "test_leaky_shift": LeakyShift}
    for name, cls in registered.items():
        search_spaces.register_op(name, kind="mixer")(cls)
    yield registered
    for name in registered:
        del _REGISTRY["mixer"][name]


def test_plugin_operator_passes_the_contract(plugin_ops) -> None:
    check_operator("test_shift")
    arch = search_spaces.Arch.from_dict(
        {
            "dim": DIM,
            "head": {"kind": "lm", "vocab_size": 16, "max_len": 32},
            "layers": [
                {"mixer": "test_shift", "channel": "mlp"},
                {"mixer": "softmax", "channel": "mlp"},
            ],
        }
    )
    assert arch.plugin_modules == [__name__]  # what an export tells its users to import


def test_broken_plugin_operator_fails_with_a_clear_message(plugin_ops) -> None:
    check_operator("test_leaky_shift", causal=False)  # nothing wrong without causality
    with pytest.raises(
        OperatorContractError,
        match=r"operator 'test_leaky_shift' \(causal=True\): changing the tokens after position 0 "
        r"changed the outputs at positions <= 0",
    ):
        check_operator("test_leaky_shift")


def test_every_issue_operator_is_registered() -> None:
    ops = list_ops()
    assert set(ops["mixer"]) >= {
        "softmax",
        "sqa",
        "linear",
        "sliding_window",
        "ssm",
        "pooling",
        "gated_conv",
        "glu_mixer",
        "identity",
    }
    assert set(ops["channel"]) >= {"mlp", "glu", "swiglu", "geglu", "reglu"}
    assert set(ops["norm"]) >= {"layernorm", "rmsnorm", "crmsnorm", "batchnorm"}


def test_unknown_operator_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown mixer operator 'nope'.*softmax.*plugins=\\["):
        get_op("nope", "mixer")
    with pytest.raises(ValueError, match="unknown operator 'nope'.*swiglu"):
        get_op("nope")


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ValueError, match="no hyperparameter 'colour'"):
        search_spaces.create_op("softmax", DIM, colour=3)


def test_user_operator_registers_on_import() -> None:
    @search_spaces.register_op("test_scaled_identity", kind="mixer")
    class Scaled(Operator):
        def __init__(self, dim: int, *, causal: bool = False, scale: float = 2.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x, *, padding_mask=None):
            return x * self.scale

        def flops(self, seq_len: int) -> int:
            return 0

    try:
        assert "test_scaled_identity" in list_ops("mixer")
        op = search_spaces.create_op("test_scaled_identity", DIM, scale=3.0)
        assert op(torch.ones(1, 2, DIM)).max() == 3.0
    finally:
        del _REGISTRY["mixer"]["test_scaled_identity"]
