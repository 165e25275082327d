"""Character-level language modelling on the shipped English corpus (``conf/corpus/``).

Each text is cut into three contiguous, disjoint parts: the first ``1 - val_frac - test_frac``
of its characters for training, the next ``val_frac`` for validation, the last ``test_frac`` for
test; a split is the concatenation of its parts over the chosen texts. The vocabulary is every
character of the training split, sorted, after ``<unk>`` (id 0), which stands for characters
never seen in training. A split is cut into non-overlapping windows of ``seq_len + 1``
characters overlapping by one: inputs are the first ``seq_len``, targets the next-character
shift, and every position is scored. The metric is bits per character (base-2 cross-entropy).

The vocabulary travels with a trained model: ``vocabulary()`` is the id -> character list
(``to_config`` rebuilds the same one from the same corpus), and ``encode``/``decode`` map text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from common.corpus import corpus_names, read_text
from nas.tasks.base import IGNORE_INDEX, Task, register_task
from nas.tasks.splits import SPLITS, FixedSplits
from search_spaces import HeadSpec

UNK = "<unk>"


@register_task("charlm")
class CharLM(FixedSplits, Task):
    """Character-level causal LM on the shipped corpus; metric: bits per character."""

    metric_name = "bpc"
    direction = "minimize"

    def __init__(
        self,
        *,
        texts: Sequence[str] | None = None,
        seq_len: int = 128,
        val_frac: float = 0.05,
        test_frac: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        latency_shape: tuple[int, int] | list[int] = (1, 2048),
    ) -> None:
        if texts is not None:
            if isinstance(texts, str) or not texts:
                raise ValueError(f"CharLM.texts must be a non-empty list of names, got {texts!r}")
            valid = corpus_names()
            for name in texts:
                if name not in valid:
                    raise ValueError(
                        f"CharLM.texts: unknown text {name!r}; valid: {', '.join(valid)}"
                    )
            texts = tuple(texts)
        for field, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CharLM.{field} must be a positive integer, but got {value!r}")
        for field, value in (("val_frac", val_frac), ("test_frac", test_frac)):
            if not 0 < value < 0.5:
                raise ValueError(f"CharLM.{field} must be in (0, 0.5), but got {value!r}")
        latency_shape = tuple(latency_shape)
        if len(latency_shape) != 2 or min(latency_shape) < 1:
            raise ValueError(f"CharLM.latency_shape must be (batch, length), got {latency_shape!r}")
        self.texts, self.seq_len = texts, seq_len
        self.val_frac, self.test_frac = val_frac, test_frac
        self.batch_size, self.seed, self.latency_shape = batch_size, seed, latency_shape

    # -- text and vocabulary --------------------------------------------------------------------
    def split_text(self, name: str) -> str:
        """The raw characters of split ``name`` (each text's part, joined by newlines)."""
        cache: dict[str, str] = self.__dict__.setdefault("_text_cache", {})
        if not cache:
            parts: dict[str, list[str]] = {s: [] for s in SPLITS}
            for text in (read_text(n) for n in (self.texts or corpus_names())):
                n = len(text)
                a = round(n * (1 - self.val_frac - self.test_frac))
                b = round(n * (1 - self.test_frac))
                for split, part in zip(SPLITS, (text[:a], text[a:b], text[b:]), strict=True):
                    parts[split].append(part)
            cache.update({s: "\n".join(p) for s, p in parts.items()})
        if name not in cache:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return cache[name]

    def vocabulary(self) -> list[str]:
        """Id -> character: ``<unk>`` then the training split's characters, sorted."""
        if "_vocab" not in self.__dict__:
            self._vocab = [UNK, *sorted(set(self.split_text("train")))]
        return list(self._vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids (len(text),) long; unseen characters become ``<unk>`` (0)."""
        ids = {c: i for i, c in enumerate(self.vocabulary())}
        return torch.tensor([ids.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text of character ids (``<unk>`` written as ``\\ufffd``)."""
        vocab = ["\ufffd", *self.vocabulary()[1:]]
        return "".join(vocab[int(i)] for i in ids)

    # -- task contract --------------------------------------------------------------------------
    def head(self) -> HeadSpec:
        # max_len also covers the latency input, which is longer than the training sequences
        return HeadSpec(
            kind="lm",
            vocab_size=len(self.vocabulary()),
            max_len=max(self.seq_len, self.latency_shape[1]),
        )

    def _make_split(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.encode(self.split_text(SPLITS[index]))  # (N,)
        n = (len(ids) - 1) // self.seq_len  # the tail shorter than one window is dropped
        if n < 1:
            raise ValueError(
                f"split {SPLITS[index]!r} has {len(ids)} characters, fewer than one window of "
                f"seq_len + 1 = {self.seq_len + 1}: lower seq_len or raise the split fraction"
            )
        span = n * self.seq_len
        return {
            "inputs": ids[:span].view(n, self.seq_len),
            "targets": ids[1 : span + 1].view(n, self.seq_len),
        }

    def metric_counts(
        self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[float, int]:
        """Summed negative log-likelihood in bits over scored positions, and their number."""
        targets = batch["targets"]
        nll = F.cross_entropy(
            outputs.flatten(0, -2).float(),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return float(nll.detach()) / math.log(2), int((targets != IGNORE_INDEX).sum())
