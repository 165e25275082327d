"""Graft spaces: parsing and its one-line errors, choices <-> plans, constraints, baselines."""

from __future__ import annotations

import pytest

from grafting.plan import load_plan
from grafting.plan_search.space import (
    KEEP,
    GraftSpace,
    baseline_choices,
    describe,
    load_space,
)

SPACE = {
    "name": "t",
    "layers": "all",
    "slots": {
        "mixer": {
            "linear": {"name": "linear", "feature_map": "hedgehog"},
            "swa": {"name": "sliding_window", "window": 64, "block_size": 32},
        },
        "mlp": {"narrow": {"name": "host", "host_fraction": 0.5}},
    },
    "constraints": {"mixer": {"min_replaced": 1, "max_replaced": 2}},
}


def test_shipped_space_and_its_baselines_match_minilm_layers():
    space = load_space("minilm")
    assert space.size(6) == 4**6 * 2**6
    chosen = baseline_choices(space, 6)
    assert set(chosen) == set(space.baselines)
    assert describe(chosen["linear_50"]) == "1:linear 3:linear 5:linear"
    assert all(c == KEEP for (i, s), c in chosen["linear_50"].items() if s == "mlp")


def test_plan_of_choices_round_trips_through_yaml(tmp_path):
    space = GraftSpace.from_dict(SPACE)
    choices = dict.fromkeys(space.keys(4), KEEP)
    choices[(0, "mixer")], choices[(2, "mixer")], choices[(3, "mlp")] = "swa", "linear", "narrow"
    plan = space.plan(choices, "p")
    resolved = plan.resolve(4)
    assert set(resolved) == {(0, "mixer"), (2, "mixer"), (3, "mlp")}
    assert resolved[(0, "mixer")].op == "sliding_window"
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan.to_dict()))
    assert space.choices_of(load_plan(path), 4) == choices


def test_constraints_count_replaced_layers_and_the_host_is_never_a_plan():
    space = GraftSpace.from_dict(SPACE)
    keep = dict.fromkeys(space.keys(4), KEEP)
    assert space.violation(keep) == 2  # replaces nothing: 1 below min_replaced, and the host
    one = {**keep, (1, "mixer"): "linear"}
    assert space.violation(one) == 0
    three = {**one, (2, "mixer"): "swa", (3, "mixer"): "swa"}
    assert space.violation(three) == 1
    only_mlp = {**keep, (0, "mlp"): "narrow"}
    assert space.violation(only_mlp) == 1  # no mixer replaced


@pytest.mark.parametrize(
    "change,message",
    [
        ({"slots": {"attn": {"a": {"name": "linear"}}}}, "unknown slot 'attn'"),
        ({"slots": {"mixer": {"keep": {"name": "linear"}}}}, "'keep' is implicit"),
        ({"slots": {"mixer": {"a": {"nam": "linear"}}}}, "operator `name`"),
        ({"constraints": {"mixer": {"max": 3}}}, "non-negative counts"),
        ({"constraints": {"mlp": {"max_replaced": -1}}}, "non-negative counts"),
        ({"baselines": "linear_50"}, "list of plan names"),
        ({"baselines": [{"grafts": []}]}, "list of plan names or named plans"),
        ({"extra": 1}, "unknown graft-space field 'extra'"),
    ],
)
def test_bad_spaces_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        GraftSpace.from_dict({**SPACE, **change})


def test_baselines_may_be_written_inline():
    inline = {
        "name": "swa_first",
        "grafts": [{"layers": "0-1", "mixer": SPACE["slots"]["mixer"]["swa"]}],
    }
    space = GraftSpace.from_dict({**SPACE, "baselines": ["linear_50", inline]})
    chosen = baseline_choices(space, 4)
    assert list(chosen) == ["linear_50", "swa_first"]
    assert describe(chosen["swa_first"]) == "0:swa 1:swa"


def test_a_baseline_outside_the_space_is_refused():
    space = GraftSpace.from_dict({**SPACE, "layers": [0, 1]})
    with pytest.raises(ValueError, match="does not search"):
        space.choices_of(load_plan("linear_50"), 6)  # grafts layers 3 and 5 too
    with pytest.raises(ValueError, match="none of graft space"):
        GraftSpace.from_dict(SPACE).choices_of(load_plan("sqa_50"), 6)
