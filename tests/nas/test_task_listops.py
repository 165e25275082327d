"""ListOps: the generator follows LRA's recipe draw for draw, labels equal an independent
evaluator, lengths and splits obey the settings."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from nas.tasks.listops import (
    END,
    OPERATORS,
    PAD,
    VOCAB,
    ListOps,
    evaluate_tokens,
    generate_tree,
    tree_tokens,
)

SMALL = {"min_length": 10, "max_length": 40, "num_train": 150, "num_val": 60, "num_test": 60}


def lra_generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """LRA's ``generate_tree`` (lra_benchmarks/data/listops.py) with its `(t, value)` nesting,
    written out again as the reference: VALUE_P 0.25, leaf when ``r > VALUE_P``."""
    r = rng.random() if depth < max_depth else 1
    if r > 0.25:
        return rng.choice(range(10))
    values = [
        lra_generate_tree(rng, depth + 1, max_depth, max_args)
        for _ in range(rng.randint(2, max_args))
    ]
    t = (rng.choice(OPERATORS), values[0])
    for value in values[1:]:
        t = (t, value)
    return (t, END)


def lra_tokens(t) -> list[str]:
    return [str(t)] if isinstance(t, int | str) else lra_tokens(t[0]) + lra_tokens(t[1])


def reference_value(tokens: list[str]) -> int:
    """Evaluate by rewriting to a Python expression (numpy-free copy of LRA's ``to_value``)."""
    fns = {
        "[MIN": "min",
        "[MAX": "max",
        "[MED": "med",
        "[SM": "sm",
    }
    code = " ".join(f"{fns[t]}([" if t in fns else "])," if t == END else f"{t}," for t in tokens)
    env = {
        "min": min,
        "max": max,
        "med": lambda v: int(statistics.median(v)),
        "sm": lambda v: sum(v) % 10,
    }
    return eval(code.rstrip(","), env)  # noqa: S307 (tokens are our own digits and names)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]", 5),
        ("[MED 1 2 ]", 1),  # even count: mean of the middle two, floored
        ("[MED 9 2 7 4 ]", 5),
        ("[SM 9 9 [SM 5 5 ] ]", 8),
        ("[MIN 7 [MAX 3 8 ] 9 ]", 7),
        ("6", 6),
    ],
)
def test_known_values(expr: str, value: int) -> None:
    assert evaluate_tokens(expr.split()) == reference_value(expr.split()) == value


def test_incomplete_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a complete"):
        evaluate_tokens("[MAX 1 2".split())


def test_generator_matches_lra_recipe_draw_for_draw() -> None:
    for seed in range(300):
        ours = generate_tree(random.Random(seed), max_depth=6, max_args=5)
        theirs = lra_generate_tree(random.Random(seed), 1, 6, 5)
        assert tree_tokens(ours) == lra_tokens(theirs)


def test_abandoned_trees_are_exactly_the_long_ones() -> None:
    for seed in range(300):
        full = tree_tokens(generate_tree(random.Random(seed), max_depth=10, max_args=10))
        cut = generate_tree(random.Random(seed), max_depth=10, max_args=10, max_tokens=40)
        assert (tree_tokens(cut) == full) if len(full) <= 40 else cut is None


def test_values_equal_the_reference_on_random_trees() -> None:
    rng = random.Random(0)
    for _ in range(500):
        tokens = tree_tokens(generate_tree(rng, max_depth=8, max_args=6))
        assert evaluate_tokens(tokens) == reference_value(tokens)


@pytest.fixture(scope="module")
def task() -> ListOps:
    return ListOps(**SMALL, seed=2)


def decode(row: torch.Tensor) -> list[str]:
    return [VOCAB[i] for i in row.tolist() if i != PAD]


def test_split_rows_are_well_formed_and_labelled(task: ListOps) -> None:
    data = task.split("train")
    inputs, mask, targets = data["inputs"], data["padding_mask"], data["targets"]
    assert inputs.shape == mask.shape == (SMALL["num_train"], SMALL["max_length"])
    assert torch.equal(mask, inputs != PAD)
    lengths = mask.sum(1)
    assert (lengths >= SMALL["min_length"]).all() and (lengths <= SMALL["max_length"]).all()
    # padding only at the end: the mask is a prefix of ones
    assert torch.equal(mask, torch.arange(inputs.shape[1]) < lengths[:, None])
    for row, y in zip(inputs, targets, strict=True):
        tokens = decode(row)
        assert tokens[0] in OPERATORS and tokens[-1] == END
        assert y.item() == reference_value(tokens)
    assert len(set(targets.tolist())) > 5  # many classes occur


def test_splits_are_disjoint_and_distinct(task: ListOps) -> None:
    rows = {
        s: [tuple(decode(r)) for r in task.split(s)["inputs"]] for s in ("train", "val", "test")
    }
    for s, r in rows.items():
        assert len(set(r)) == len(r), s
    assert not set(rows["train"]) & set(rows["val"])
    assert not set(rows["train"]) & set(rows["test"])
    assert not set(rows["val"]) & set(rows["test"])
    other = ListOps(**SMALL, seed=3).split("val")["inputs"]
    assert not torch.equal(other, task.split("val")["inputs"])


def test_head_and_batches(task: ListOps) -> None:
    head = task.head()
    assert (head.kind, head.vocab_size, head.num_classes, head.max_len) == ("seq_cls", 16, 10, 2048)
    batch = next(iter(task.datamodule().train_dataloader()))
    assert set(batch) == {"inputs", "padding_mask", "targets"}
    assert batch["targets"].shape == (task.batch_size,)


def test_invalid_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_args"):
        ListOps(max_args=1)
    with pytest.raises(ValueError, match="min_length"):
        ListOps(min_length=200, max_length=128)
    with pytest.raises(ValueError, match="num_train"):
        ListOps(num_train=0)
    with pytest.raises(ValueError, match="latency_shape"):
        ListOps(latency_shape=[2048])
