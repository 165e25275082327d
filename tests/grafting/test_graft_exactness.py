"""Grafted at init vs host: an operator that can represent what it replaces (softmax for softmax
attention, sqa with every query head, the host's own MLP) reproduces the host's outputs,
padding and positions included, for every family."""

from __future__ import annotations

import copy

import pytest
import torch

from grafting.checkpoints import load_host
from grafting.plan import GraftPlan
from grafting.surgery import graft

TEXTS = ["a short one.", "a much longer sentence, with several more words, to force padding here."]


def exact_plan(host) -> GraftPlan:
    heads = host.family.attention_hparams(host.model.config)["heads"]
    return GraftPlan.from_dict(
        {
            "name": "exact",
            "grafts": [
                {"layers": "even", "mixer": {"name": "softmax"}, "mlp": {"name": "host"}},
                {"layers": "odd", "mixer": {"name": "sqa", "q_heads": heads}},
            ],
        }
    )


def batch(host, padding_side: str):
    tok = host.tokenizer
    tok.padding_side = padding_side
    return tok(TEXTS, padding=True, return_tensors="pt")


@torch.no_grad()
def test_minilm_softmax_and_full_sqa_reproduce_host():
    host = load_host("all-MiniLM-L6-v2")
    student = copy.deepcopy(host.model)
    graft(student, host.family, exact_plan(host))
    b = batch(host, "right")
    ref, out = host.model(**b).last_hidden_state, student(**b).last_hidden_state
    real = b["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@torch.no_grad()
def test_tiny_families_reproduce_host(tiny_models, family, padding_side):
    host = load_host(tiny_models[family])
    student = copy.deepcopy(host.model)
    graft(student, host.family, exact_plan(host))
    b = batch(host, padding_side)
    real = b["attention_mask"].bool()
    if host.is_encoder:
        ref, out = host.model(**b).last_hidden_state, student(**b).last_hidden_state
    else:  # explicit position ids, as generate() passes them with left padding
        pos = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        ref, out = host.model(**b, position_ids=pos).logits, student(**b, position_ids=pos).logits
    torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_rope_scaling_is_taken_from_the_host(tiny_models):
    host = load_host(tiny_models["llama"])
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, exact_plan(host))
    op = wrappers[(0, "mixer")].op
    torch.testing.assert_close(op.rotary.inv_freq, host.model.model.rotary_emb.inv_freq)
    assert op.rotary.scaling == pytest.approx(host.model.model.rotary_emb.attention_scaling)
    assert op.rotary.scaling != 1.0  # YaRN: the test would not notice a missing factor otherwise
