"""ListOps (Nangia & Bowman 2018) as generated for Long Range Arena (Tay et al. 2021).

A sequence is a bracketed prefix expression over the digits 0-9 with four list operators:
``MIN``, ``MAX``, ``MED`` (median, rounded down) and ``SM`` (sum modulo 10), e.g.
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` = 5. The task is to classify the value (10
classes) from the whole sequence. Following LRA's generator (``lra_benchmarks/data/listops.py``),
a node at depth ``d < max_depth`` is an operator with probability 0.25, otherwise a digit
(always a digit at ``max_depth``); an operator takes ``randint(2, max_args)`` arguments; and
whole trees are drawn until their length in tokens lies in the length range, distinct within the
data set. Tokens as in LRA: an operator with its opening bracket (``[MIN``) is one token, ``]``
another, each digit one. LRA used max_depth 10, max_args 10 and lengths 500-2000; the defaults
here keep depth and arguments but use 32-128 tokens, to fit a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch

from nas.tasks.base import Task, register_task
from nas.tasks.splits import SPLITS, FixedSplits
from search_spaces import HeadSpec

PAD = 0
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = ("<pad>", *map(str, range(10)), *OPERATORS, END)  # token id -> token string
TOKEN_IDS = {t: i for i, t in enumerate(VOCAB)}
VALUE_P = 0.25  # LRA's VALUE_P: an inner node is an operator when random() <= VALUE_P

Tree = int | tuple[str, list["Tree"]]  # a digit, or (operator, arguments)


class _TooLong(Exception):
    """Raised inside ``generate_tree`` once a tree passes ``max_tokens``."""


def generate_tree(
    rng: random.Random, max_depth: int, max_args: int, *, max_tokens: int | None = None
) -> Tree | None:
    """One random tree, drawn exactly as LRA's ``generate_tree``; or None as soon as it is
    longer than ``max_tokens`` tokens. Abandoning a tree that the length filter would reject
    anyway leaves the distribution of accepted trees unchanged and saves most of the time."""
    budget = [max_tokens if max_tokens is not None else float("inf")]

    def node(depth: int) -> Tree:
        if depth < max_depth and rng.random() <= VALUE_P:
            budget[0] -= 2  # the operator token and its closing bracket
            n = rng.randint(2, max_args)
            args = [node(depth + 1) for _ in range(n)]
            return (rng.choice(OPERATORS), args)
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        return rng.choice(range(10))

    try:
        return node(1)
    except _TooLong:
        return None


def tree_tokens(tree: Tree) -> list[str]:
    """The token strings of a tree, in prefix order."""
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    return [op, *(t for a in args for t in tree_tokens(a)), END]


def _median_floor(values: list[int]) -> int:
    """LRA's ``int(np.median(values))``: the middle value, or the mean of the middle two, floored."""
    s, m = sorted(values), len(values) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2


FUNCTIONS = {"[MIN": min, "[MAX": max, "[MED": _median_floor, "[SM": lambda v: sum(v) % 10}


def apply(op: str, values: list[int]) -> int:
    """An operator on its argument values."""
    if op not in FUNCTIONS:
        raise ValueError(f"unknown ListOps operator {op!r}; valid: {', '.join(OPERATORS)}")
    return FUNCTIONS[op](values)


def evaluate_tokens(tokens: list[str]) -> int:
    """The value of a token sequence (a stack machine, so deep trees need no recursion)."""
    stack: list[tuple[str, list[int]]] = []
    value = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append((tok, []))
            continue
        value = apply(*stack.pop()) if tok == END else int(tok)
        if stack:
            stack[-1][1].append(value)
    if stack or value is None:
        raise ValueError(f"not a complete ListOps expression: {' '.join(tokens)!r}")
    return value


def listops_examples(
    num: int,
    *,
    min_length: int,
    max_length: int,
    max_depth: int,
    max_args: int,
    rng: random.Random,
    exclude: set[tuple[str, ...]] | frozenset = frozenset(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[str, ...]]]:
    """``num`` distinct expressions of ``min_length..max_length`` tokens, none in ``exclude``:
    inputs (num, max_length) long padded with ``PAD``, padding_mask (num, max_length) bool,
    targets (num,) long, and the token tuples."""
    seen: set[tuple[str, ...]] = set()
    rows: list[tuple[str, ...]] = []
    while len(rows) < num:
        tree = generate_tree(rng, max_depth, max_args, max_tokens=max_length)
        if tree is None:
            continue
        tokens = tuple(tree_tokens(tree))
        if min_length <= len(tokens) <= max_length and tokens not in seen and tokens not in exclude:
            seen.add(tokens)
            rows.append(tokens)
    inputs = torch.full((num, max_length), PAD, dtype=torch.long)
    for i, tokens in enumerate(rows):
        inputs[i, : len(tokens)] = torch.tensor([TOKEN_IDS[t] for t in tokens])
    targets = torch.tensor([evaluate_tokens(list(t)) for t in rows], dtype=torch.long)
    return inputs, inputs != PAD, targets, rows


@register_task("listops")
class ListOps(FixedSplits, Task):
    """LRA ListOps; metric: classification accuracy of the expression's value."""

    metric_name = "accuracy"
    direction = "maximize"

    def __init__(
        self,
        *,
        min_length: int = 32,
        max_length: int = 128,
        max_depth: int = 10,
        max_args: int = 10,
        num_train: int = 5000,
        num_val: int = 500,
        num_test: int = 500,
        batch_size: int = 64,
        seed: int = 0,
        latency_shape: tuple[int, int] | list[int] = (1, 2048),
    ) -> None:
        for field, value in (
            ("min_length", min_length),
            ("max_length", max_length),
            ("max_depth", max_depth),
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ListOps.{field} must be a positive integer, but got {value!r}")
        if not isinstance(max_args, int) or max_args < 2:
            raise ValueError(f"ListOps.max_args must be an integer >= 2, but got {max_args!r}")
        # the shortest operator node is `[OP d d ]` (4 tokens); deeper trees need depth >= 2
        if max_depth < 2 or max_length < max(min_length, 4):
            raise ValueError(
                f"`max_depth >= 2` and `max(min_length, 4) <= max_length` must hold, but got "
                f"{max_depth=}, {min_length=}, {max_length=}"
            )
        latency_shape = tuple(latency_shape)
        if len(latency_shape) != 2 or min(latency_shape) < 1:
            raise ValueError(
                f"ListOps.latency_shape must be (batch, length), got {latency_shape!r}"
            )
        self.min_length, self.max_length = min_length, max_length
        self.max_depth, self.max_args = max_depth, max_args
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.batch_size, self.seed, self.latency_shape = batch_size, seed, latency_shape

    def head(self) -> HeadSpec:
        return HeadSpec(
            kind="seq_cls",
            vocab_size=len(VOCAB),
            num_classes=10,
            max_len=max(self.max_length, self.latency_shape[1]),
        )

    def _make_split(self, index: int) -> dict[str, torch.Tensor]:
        """Split ``i`` is drawn from ``random.Random(3 * seed + i)``; training expressions that
        also occur in val or test are redrawn, so the splits are disjoint."""
        rows: dict[str, list[tuple[str, ...]]] = self.__dict__.setdefault("_rows", {})
        exclude: set[tuple[str, ...]] = set()
        if SPLITS[index] == "train":
            for name in ("val", "test"):
                self.split(name)  # made first: training data must avoid them
                exclude.update(rows[name])
        inputs, mask, targets, rows[SPLITS[index]] = listops_examples(
            (self.num_train, self.num_val, self.num_test)[index],
            min_length=self.min_length,
            max_length=self.max_length,
            max_depth=self.max_depth,
            max_args=self.max_args,
            rng=random.Random(3 * self.seed + index),
            exclude=exclude,
        )
        return {"inputs": inputs, "padding_mask": mask, "targets": targets}

    def metric_counts(
        self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[float, int]:
        """Correct argmax predictions (outputs (B, 10)) and the number of sequences."""
        targets = batch["targets"]
        return float((outputs.argmax(dim=-1) == targets).sum()), int(targets.numel())
