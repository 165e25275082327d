"""Incremental decoding of grafted decoders: every operator's ``step`` equals its full forward
(padding and positions included), ``generate()`` equals greedy decoding by full forwards, and
causal linear / ssm / sliding-window layers keep a constant-size state or a bounded cache."""

from __future__ import annotations

import copy

import pytest
import torch

from grafting.checkpoints import load_host
from grafting.plan import GraftPlan
from grafting.surgery import graft
from grafting.wrappers import GraftStateLayer
from search_spaces import create_op

STEP_OPS = {
    "softmax": dict(heads=4, kv_heads=2, rope_theta=1e4),
    "sqa": dict(heads=4, q_heads=2, kv_heads=1, rope_theta=1e4),
    "sliding_window": dict(heads=4, kv_heads=2, window=5, block_size=4, rope_theta=1e4),
    "linear": dict(heads=4, kv_heads=2, feature_map="hedgehog", chunk_size=4, rope_theta=1e4),
    "ssm": dict(chunk_size=4),
    "swa_linear": dict(heads=4, kv_heads=2, window=5, block_size=4, chunk_size=4, rope_theta=1e4),
    "swa_linear+sinks": dict(heads=4, kv_heads=2, window=5, block_size=4, chunk_size=4, sinks=2),
    "swa_linear+sinks>prompt": dict(heads=4, window=3, block_size=2, chunk_size=4, sinks=9),
}


@pytest.mark.parametrize("name", sorted(STEP_OPS))
def test_step_in_pieces_equals_forward(name):
    torch.manual_seed(0)
    op = create_op(name.split("+")[0], 32, causal=True, **STEP_OPS[name]).double()
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    pm = torch.ones(2, 19, dtype=torch.bool)
    pm[1, :3] = False  # left padding, as generate() pads prompts
    pos = (pm.cumsum(-1) - 1).clamp(min=0)
    kw = {"positions": pos} if name != "ssm" else {}
    ref = op(x, padding_mask=pm, **kw)
    ys, state = [], None
    for a, b in [(0, 7), (7, 8), (8, 9), (9, 15), (15, 19)]:
        y, state = op.step(x[:, a:b], state, padding_mask=pm[:, a:b], positions=pos[:, a:b])
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1)[pm], ref[pm], rtol=1e-10, atol=1e-10)


def _plan(mixer: dict) -> GraftPlan:
    return GraftPlan.from_dict({"name": "t", "grafts": [{"layers": "all", "mixer": mixer}]})


@pytest.mark.parametrize(
    "mixer",
    [
        {"name": "linear", "feature_map": "hedgehog"},
        {"name": "ssm"},
        {"name": "sliding_window", "window": 4, "block_size": 4},
        {"name": "swa_linear", "window": 4, "block_size": 4},
        {"name": "swa_linear", "window": 4, "block_size": 4, "sinks": 1},
    ],
    ids=lambda m: "+".join(f"{v}" for v in m.values()),
)
@torch.no_grad()
def test_generate_matches_full_forward_with_bounded_state(tiny_models, mixer):
    host = load_host(tiny_models["llama"])
    model = copy.deepcopy(host.model)
    graft(model, host.family, _plan(mixer))
    tok = host.tokenizer
    tok.padding_side = "left"
    b = tok(["hello there my friend", "a"], padding=True, return_tensors="pt")
    b.pop("token_type_ids")
    P = b["input_ids"].shape[1]
    sizes = {}
    for new in (6, 12):
        out = model.generate(
            **b,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
        )
        cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
        layers = [c for c in cache.layers if isinstance(c, GraftStateLayer)]
        assert len(layers) == 2 and all(c.seen == P + new - 1 for c in layers)
        sizes[new] = sum(c.state_bytes() for c in layers)
    seq = out.sequences
    mask = torch.ones_like(seq)
    mask[:, :P] = b["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=seq, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(logits[:, P - 1 : -1].argmax(-1), seq[:, P:])
    assert sizes[6] == sizes[12]  # constant state / bounded cache: no growth with length
