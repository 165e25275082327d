"""Multi-query associative recall (MQAR), as in Zoology (Arora et al. 2023, "Zoology: Measuring
and Improving Recall in Efficient Language Models").

Each sequence first lists ``num_pairs`` key-value pairs ``k1 v1 k2 v2 ...``, then filler
tokens (0) in which ``num_queries`` of the keys reappear at random positions. A causal language
model must predict, at each reappearing key, the value it was paired with; only those positions
are scored. Keys come from ``[1, V/2)`` and values from ``[V/2, V)``; within a sequence keys
and values are distinct, so every query has exactly one right answer. Recall of many pairs
needs a state that grows with the pairs: softmax attention solves it, a fixed-size recurrent
state (linear attention, SSMs) does so only when the state is large enough.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch

from nas.tasks.base import IGNORE_INDEX, Task, register_task
from nas.tasks.splits import SPLITS, SplitsDataModule  # noqa: F401
from search_spaces import HeadSpec

FILLER = 0
_CHUNK = 2048  # rows generated at once: bounds the (rows, vocab) random matrices' memory


def _distinct(n: int, high: int, k: int, g: torch.Generator) -> torch.Tensor:
    """(n, k) samples from ``range(high)``, distinct within each row, in random order: the
    indices of the k largest of ``high`` i.i.d. uniforms (a random permutation's prefix)."""
    return torch.rand(n, high, generator=g).topk(k, dim=1).indices


def mqar_examples(
    num: int,
    *,
    vocab_size: int,
    seq_len: int,
    num_pairs: int,
    num_queries: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` MQAR sequences: inputs and targets, both (num, seq_len) long (see module doc)."""
    half, rows = vocab_size // 2, []
    for start in range(0, num, _CHUNK):
        n = min(_CHUNK, num - start)
        keys = _distinct(n, half - 1, num_pairs, generator) + 1  # (n, P) in [1, V/2)
        values = _distinct(n, vocab_size - half, num_pairs, generator) + half  # (n, P)
        asked = _distinct(n, num_pairs, num_queries, generator)  # (n, Q) pair indices
        region = seq_len - 2 * num_pairs
        where = _distinct(n, region, num_queries, generator) + 2 * num_pairs  # (n, Q) positions
        inputs = torch.full((n, seq_len), FILLER, dtype=torch.long)
        inputs[:, : 2 * num_pairs] = torch.stack([keys, values], dim=-1).view(n, 2 * num_pairs)
        inputs.scatter_(1, where, keys.gather(1, asked))
        targets = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
        targets.scatter_(1, where, values.gather(1, asked))
        rows.append((inputs, targets))
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


@register_task("mqar")
class MQAR(Task):
    """Multi-query associative recall; metric: accuracy over the query positions."""

    metric_name = "accuracy"
    direction = "maximize"

    def __init__(
        self,
        *,
        vocab_size: int = 32,
        seq_len: int = 32,
        num_pairs: int = 8,
        num_queries: int | None = None,
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 1000,
        batch_size: int = 64,
        seed: int = 0,
        latency_shape: tuple[int, int] | list[int] = (1, 2048),
    ) -> None:
        num_queries = num_pairs if num_queries is None else num_queries
        for field, value in (
            ("vocab_size", vocab_size),
            ("seq_len", seq_len),
            ("num_pairs", num_pairs),
            ("num_queries", num_queries),
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MQAR.{field} must be a positive integer, but got {value!r}")
        if num_pairs > vocab_size // 2 - 1 or num_pairs > vocab_size - vocab_size // 2:
            raise ValueError(
                f"`num_pairs <= vocab_size // 2 - 1` must hold (distinct keys), but got "
                f"{num_pairs=}, {vocab_size=}"
            )
        if num_queries > num_pairs or num_queries > seq_len - 2 * num_pairs:
            raise ValueError(
                f"`num_queries <= num_pairs` and `2 * num_pairs + num_queries <= seq_len` must "
                f"hold, but got {num_queries=}, {num_pairs=}, {seq_len=}"
            )
        latency_shape = tuple(latency_shape)
        if len(latency_shape) != 2 or min(latency_shape) < 1:
            raise ValueError(f"MQAR.latency_shape must be (batch, length), got {latency_shape!r}")
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.num_pairs, self.num_queries = num_pairs, num_queries
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.batch_size, self.seed, self.latency_shape = batch_size, seed, latency_shape
        self._splits: dict[str, dict[str, torch.Tensor]] = {}

    def head(self) -> HeadSpec:
        # max_len also covers the latency input, which is longer than the training sequences
        return HeadSpec(
            kind="lm", vocab_size=self.vocab_size, max_len=max(self.seq_len, self.latency_shape[1])
        )

    def split(self, name: str) -> dict[str, torch.Tensor]:
        """The whole ``train``/``val``/``test`` split as ``{"inputs", "targets"}`` tensors
        (generated on first use, then cached). Split ``i`` is drawn from seed ``3 * seed + i``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        if name not in self._splits:
            index = SPLITS.index(name)
            g = torch.Generator().manual_seed(3 * self.seed + index)
            inputs, targets = mqar_examples(
                (self.num_train, self.num_val, self.num_test)[index],
                vocab_size=self.vocab_size,
                seq_len=self.seq_len,
                num_pairs=self.num_pairs,
                num_queries=self.num_queries,
                generator=g,
            )
            self._splits[name] = {"inputs": inputs, "targets": targets}
        return self._splits[name]

    def datamodule(self, batch_size: int | None = None) -> L.LightningDataModule:
        return SplitsDataModule(self, batch_size or self.batch_size)

    def metric_counts(
        self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[float, int]:
        """Correct argmax predictions at query positions, and the number of query positions."""
        targets = batch["targets"]
        scored = targets != IGNORE_INDEX  # (B, L)
        correct = (outputs.argmax(dim=-1) == targets) & scored
        return float(correct.sum()), int(scored.sum())
