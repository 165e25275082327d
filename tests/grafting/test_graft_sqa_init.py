"""``sqa`` started from a host's attention keeps the kept heads exactly: its output equals the
host attention with the dropped heads' output columns set to zero."""

from __future__ import annotations

import pytest
import torch

from grafting.surgery import sqa_weights
from search_spaces import create_op


@pytest.mark.parametrize("kv_heads,q_heads,sqa_kv", [(8, 4, 4), (8, 2, 2), (2, 4, 2)])
def test_sqa_start_keeps_the_kept_heads(kv_heads, q_heads, sqa_kv):
    torch.manual_seed(0)
    host = create_op("softmax", 64, heads=8, kv_heads=kv_heads, qkv_bias=True).double()
    sqa = create_op("sqa", 64, heads=8, q_heads=q_heads, kv_heads=sqa_kv, qkv_bias=True).double()
    hp = {"heads": 8, "kv_heads": kv_heads, "head_dim": 8}
    sqa.load_state_dict(sqa_weights(host.state_dict(), sqa, hp))
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
        sqa_weights(host.state_dict(), sqa, {"heads": 8, "kv_heads": 8, "head_dim": 8})
