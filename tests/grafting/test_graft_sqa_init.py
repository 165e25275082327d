"""``sqa`` started from a host's attention (its ``init_from_attention`` hook) keeps the kept heads
exactly: its output equals the host attention with the dropped heads' output columns set to zero;
``op_kwargs`` gives it half the host's query heads unless the plan says otherwise."""

from __future__ import annotations

import pytest
import torch

from search_spaces import create_op, get_op


@pytest.mark.parametrize("kv_heads,q_heads,sqa_kv", [(8, 4, 4), (8, 2, 2), (2, 4, 2)])
def test_sqa_start_keeps_the_kept_heads(kv_heads, q_heads, sqa_kv):
    torch.manual_seed(0)
    host = create_op("softmax", 64, heads=8, kv_heads=kv_heads, qkv_bias=True).double()
    sqa = create_op("sqa", 64, heads=8, q_heads=q_heads, kv_heads=sqa_kv, qkv_bias=True).double()
    hp = {"heads": 8, "kv_heads": kv_heads, "head_dim": 8}
    assert sqa.init_from_attention(host.state_dict(), hp)
    dropped = torch.ones(8, dtype=torch.bool)
    dropped[:: 8 // q_heads] = False
    with torch.no_grad():
        host.o_proj.weight.view(64, 8, 8)[:, dropped] = 0
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    torch.testing.assert_close(sqa(x), host(x), rtol=1e-10, atol=1e-10)


def test_sqa_start_rejects_heads_that_do_not_divide():
    host = create_op("softmax", 64, heads=8)
    sqa = create_op("sqa", 64, heads=8, q_heads=3, kv_heads=3)
    with pytest.raises(ValueError, match="must divide"):
        sqa.init_from_attention(host.state_dict(), {"heads": 8, "kv_heads": 8, "head_dim": 8})


def test_sqa_hparams_from_the_host_attention():
    host = {"heads": 8, "kv_heads": 4, "head_dim": 8, "qkv_bias": True}
    sqa, softmax = get_op("sqa"), get_op("softmax")
    assert sqa.hparams_from_attention(host, {}) == {**host, "q_heads": 4, "kv_heads": 4}
    assert sqa.hparams_from_attention(host, {"q_heads": 2}) == {**host, "q_heads": 2, "kv_heads": 2}
    assert softmax.hparams_from_attention(host, {}) == host
    assert get_op("ssm").hparams_from_attention(host, {}) == {}  # takes nothing from attention
