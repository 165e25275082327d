"""Grafted at init vs host: an operator that can represent what it replaces (softmax for softmax
attention, sqa with every query head, the host's own MLP) reproduces the host's outputs,
padding and positions included, for every model type of every registered family."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from grafting.checkpoints import load_host
from grafting.families import FAMILIES, Family, get_family
from grafting.plan import GraftPlan
from grafting.surgery import graft
from tests.grafting.dit.tiny import dit_inputs, random_dit

TEXTS = ["a short one.", "a much longer sentence, with several more words, to force padding here."]


def exact_plan(family: Family, config) -> GraftPlan:
    heads = family.attention_hparams(config)["heads"]
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
    graft(student, host.family, exact_plan(host.family, host.model.config))
    b = batch(host, "right")
    ref, out = host.model(**b).last_hidden_state, student(**b).last_hidden_state
    real = b["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)


def text_forward(host, padding_side: str, model) -> torch.Tensor:
    """``model``'s outputs at the real (not padded) positions of the two texts."""
    b = batch(host, padding_side)
    real = b["attention_mask"].bool()
    if host.is_encoder:
        return model(**b).last_hidden_state[real]
    # explicit position ids, as generate() passes them with left padding
    pos = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return model(**b, position_ids=pos).logits[real]


def tiny_host(tiny_models, model_type: str) -> tuple[torch.nn.Module, Family, list]:
    """A tiny host of ``model_type``, its family and the forward passes to compare."""
    if model_type == "dit":  # images, timesteps and classes: no tokenizer, no padding
        model, (x, t, y) = random_dit(), dit_inputs()
        return model, get_family(model.config), [lambda m: m(x, t, y)]
    if model_type not in tiny_models:
        pytest.fail(f"no tiny {model_type!r} host: add its config to tests/grafting/conftest.py")
    host = load_host(tiny_models[model_type])
    forwards = [partial(text_forward, host, side) for side in ("right", "left")]
    return host.model, host.family, forwards


@pytest.mark.parametrize("model_type", [t for family in FAMILIES for t in family.model_types])
@torch.no_grad()
def test_every_registered_model_type_reproduces_host(tiny_models, model_type):
    model, family, forwards = tiny_host(tiny_models, model_type)
    student = copy.deepcopy(model)
    graft(student, family, exact_plan(family, model.config))
    for forward in forwards:
        torch.testing.assert_close(forward(student), forward(model), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_rope_scaling_is_taken_from_the_host(tiny_models):
    host = load_host(tiny_models["llama"])
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, exact_plan(host.family, host.model.config))
    op = wrappers[(0, "mixer")].op
    torch.testing.assert_close(op.rotary.inv_freq, host.model.model.rotary_emb.inv_freq)
    assert op.rotary.scaling == pytest.approx(host.model.model.rotary_emb.attention_scaling)
    assert op.rotary.scaling != 1.0  # YaRN: the test would not notice a missing factor otherwise
