"""Graft plans: layer selectors, parsing errors, validation against a model before any change,
and every shipped plan building on the real MiniLM."""

from __future__ import annotations

import copy

import pytest

from grafting.checkpoints import load_host
from grafting.plan import GraftPlan, load_plan, select_layers
from grafting.surgery import graft
from search_spaces.config_paths import available

SHIPPED = [
    "linear_50",
    "linear_100",
    "hybrid_swa_linear_50",
    "sqa_50",
    "swa_50",
    "gated_conv_50",
    "mlp_narrow_50",
]


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("all", [0, 1, 2, 3, 4, 5]),
        ("odd", [1, 3, 5]),
        ("even", [0, 2, 4]),
        ({"every": 3}, [0, 3]),
        ({"every": 2, "start": 1}, [1, 3, 5]),
        ("1-3", [1, 2, 3]),
        ([5, 0, -1], [0, 5]),
        (2, [2]),
    ],
)
def test_select_layers(selector, expected):
    assert select_layers(selector, 6) == expected


@pytest.mark.parametrize("selector", [6, [0, 9], "4-2", "most", {"every": 0}, True, 1.5])
def test_bad_selectors_name_the_field(selector):
    with pytest.raises(ValueError, match=r"grafts\[0\]\.layers"):
        GraftPlan.from_dict(
            {"grafts": [{"layers": selector, "mixer": {"name": "linear"}}]}
        ).resolve(6)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"grafts": []}, "non-empty"),
        ({"grafts": [{"layers": 0}]}, "names no slot"),
        ({"grafts": [{"layers": 0, "attention": {"name": "linear"}}]}, "unknown slot"),
        ({"grafts": [{"layers": 0, "mixer": {"feature_map": "elu1"}}]}, "operator `name`"),
        ({"grafts": [{"layers": 0, "mixer": {"name": "linear", "init": "magic"}}]}, "init"),
        ({"grafts": [{"layers": 0, "mlp": {"name": "mlp", "host_fraction": 2}}]}, "host_fraction"),
        ({"grafts": [], "extra": 1}, "unknown plan field"),
    ],
)
def test_malformed_plans(data, match):
    with pytest.raises(ValueError, match=match):
        GraftPlan.from_dict(data)


@pytest.fixture(scope="module")
def minilm():
    return load_host("all-MiniLM-L6-v2")


@pytest.mark.parametrize(
    "mixer,match",
    [
        ({"name": "no_such_op"}, "unknown mixer operator"),
        ({"name": "linear", "bogus": 1}, "no hyperparameter 'bogus'"),
        ({"name": "sqa", "q_heads": 24}, "q_heads <= heads"),
        ({"name": "linear", "heads": 5}, "layer 1 mixer"),
    ],
)
def test_impossible_plans_fail_before_the_model_changes(minilm, mixer, match):
    model = copy.deepcopy(minilm.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = GraftPlan.from_dict({"grafts": [{"layers": "odd", "mixer": mixer}]})
    with pytest.raises(ValueError, match=match):
        graft(model, minilm.family, plan)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before)


def test_every_plan_is_shipped():
    assert set(SHIPPED) <= set(available("graft"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_plans_graft_minilm(minilm, name):
    import torch

    model = copy.deepcopy(minilm.model)
    wrappers = graft(model, minilm.family, load_plan(name))
    assert wrappers
    b = minilm.tokenizer(
        ["one sentence.", "and another, longer one."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(**b).last_hidden_state
    assert torch.isfinite(out).all()
    assert load_plan(name).to_dict()["name"] == name
