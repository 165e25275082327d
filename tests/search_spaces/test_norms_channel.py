"""Equivalence tests of the channel mixers (mlp, GLU family) and the norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.registry import create_op, get_op

GLUS = {"glu": torch.sigmoid, "swiglu": F.silu, "geglu": F.gelu, "reglu": F.relu}
TOL = dict(atol=1e-10, rtol=1e-10)


def test_swiglu_hand_formula() -> None:
    torch.manual_seed(0)
    op = create_op("swiglu", 16, ratio=2.5).double()
    m = op.mlp
    assert m.fc1_g.out_features == m.fc1_x.out_features == 40
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    ref = m.fc2(F.silu(m.fc1_g(x)) * m.fc1_x(x))
    torch.testing.assert_close(op(x), ref, **TOL)


def test_glu_variants_differ_only_by_activation() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    ref_op = create_op("swiglu", 16, bias=False).double()
    outs = {}
    for name, act in GLUS.items():
        op = create_op(name, 16, bias=False).double()
        op.load_state_dict(ref_op.state_dict())  # same parameters, same names
        m = op.mlp
        outs[name] = op(x)
        torch.testing.assert_close(outs[name], m.fc2(act(m.fc1_g(x)) * m.fc1_x(x)), **TOL)
    assert len({tuple(o.flatten()[:3].tolist()) for o in outs.values()}) == len(GLUS)
    # one shared implementation: the subclasses set only the activation
    assert all(get_op(n).__init__ is get_op("swiglu").__init__ for n in GLUS)
    assert all(get_op(n).forward is get_op("swiglu").forward for n in GLUS)


def test_mlp_formula_and_hidden() -> None:
    torch.manual_seed(0)
    op = create_op("mlp", 16, ratio=3.0, act="gelu_tanh", bias=False).double()
    m = op.mlp
    assert m.fc1.out_features == 48 and m.fc1.bias is None
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    ref = m.fc2(F.gelu(m.fc1(x), approximate="tanh"))
    torch.testing.assert_close(op(x), ref, **TOL)
    assert create_op("swiglu", 16, hidden=11).mlp.fc2.in_features == 11
    with pytest.raises(ValueError, match="act"):
        create_op("mlp", 16, act="tanh")


@pytest.mark.parametrize("name", ["mlp", "swiglu", "geglu"])
def test_channel_flops(name: str) -> None:
    op = create_op(name, 32)
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(1, 10, 32))
    assert abs(op.flops(10) - counter.get_total_flops()) <= 0.05 * counter.get_total_flops()


def zero_mean(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float64)
    return x - x.mean(-1, keepdim=True)


def test_layernorm_rmsnorm_crmsnorm_agree_on_zero_mean() -> None:
    torch.manual_seed(0)
    D = 12
    x = zero_mean((2, 5, D)) * 3
    ln = create_op("layernorm", D, eps=1e-6).double()
    rms = create_op("rmsnorm", D, eps=1e-6).double()
    crms = create_op("crmsnorm", D - 1, eps=1e-6).double()
    torch.testing.assert_close(ln(x), rms(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(crms(x[..., : D - 1]), rms(x)[..., : D - 1], atol=1e-6, rtol=0)


def test_crmsnorm_weight_and_general_input() -> None:
    torch.manual_seed(0)
    op = create_op("crmsnorm", 6).double()
    with torch.no_grad():
        op.weight.normal_()
    x = torch.randn(3, 6, dtype=torch.float64)
    full = torch.cat([x, -x.sum(-1, keepdim=True)], -1)  # the zero-mean 7-vector
    ref = op.weight * x / full.square().mean(-1, keepdim=True).add(op.eps).sqrt()
    torch.testing.assert_close(op(x), ref, **TOL)


def test_batchnorm_refuses_causal() -> None:
    assert get_op("batchnorm").supports_causal is False
    with pytest.raises(ValueError, match="causal"):
        create_op("batchnorm", 8, causal=True)


def test_batchnorm_padding_uses_real_tokens_only() -> None:
    torch.manual_seed(0)
    op = create_op("batchnorm", 8).double().train()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False
    mask[1, 4:] = False
    x2 = torch.where(mask[..., None], x, torch.randn_like(x) * 100 + 50)
    y = op(x, padding_mask=mask)
    stats = op.norm.running_mean.clone(), op.norm.running_var.clone()
    op.norm.reset_running_stats()
    y2 = op(x2, padding_mask=mask)
    torch.testing.assert_close(y[mask], y2[mask], **TOL)
    torch.testing.assert_close((op.norm.running_mean, op.norm.running_var), stats, **TOL)
    real = x[mask]  # (N, 8): reference statistics by hand
    ref = (real - real.mean(0)) / (real.var(0, unbiased=False) + op.eps).sqrt()
    torch.testing.assert_close(y[mask], ref, **TOL)
    assert torch.isfinite(y).all()


def test_batchnorm_statistics_span_positions_and_batch() -> None:
    torch.manual_seed(0)
    op = create_op("batchnorm", 4).double().train()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    flat = x.reshape(-1, 4)
    ref = (flat - flat.mean(0)) / (flat.var(0, unbiased=False) + op.eps).sqrt()
    torch.testing.assert_close(op(x), ref.view_as(x), **TOL)


def test_batchnorm_single_token_in_training() -> None:
    op = create_op("batchnorm", 4).train()
    y = op(torch.randn(1, 1, 4))
    assert torch.isfinite(y).all()
    mask = torch.tensor([[False, False, True]])
    assert torch.isfinite(op(torch.randn(1, 3, 4), padding_mask=mask)).all()
