"""Character LM: contiguous disjoint splits that rebuild the text, a vocabulary from the training
split, windows shifted by one, and an exact bits-per-character metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common.corpus import corpus_names, read_text
from nas.tasks import get_task
from nas.tasks.charlm import UNK, CharLM

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def task() -> CharLM:
    return CharLM(texts=["as_you_like_it"], seq_len=64, batch_size=16)


def test_splits_are_contiguous_disjoint_and_rebuild_each_text(task: CharLM) -> None:
    text = read_text("as_you_like_it")
    parts = [task.split_text(s) for s in SPLITS]
    assert "".join(parts) == text  # in order, nothing lost, nothing shared
    assert abs(len(parts[1]) - 0.05 * len(text)) <= 1 and abs(len(parts[2]) - 0.05 * len(text)) <= 1
    # several texts: each contributes its own parts, in the order given
    both = CharLM(texts=["as_you_like_it", "alice_in_wonderland"], seq_len=64)
    alice = CharLM(texts=["alice_in_wonderland"], seq_len=64)
    for s in SPLITS:
        assert both.split_text(s) == task.split_text(s) + "\n" + alice.split_text(s)


def test_default_uses_every_shipped_text() -> None:
    default = CharLM()
    assert default.texts is None
    total = sum(len(read_text(n)) for n in corpus_names())
    joins = len(SPLITS) * (len(corpus_names()) - 1)  # one newline between texts in each split
    assert sum(len(default.split_text(s)) for s in SPLITS) == total + joins


def test_vocabulary_and_round_trip(task: CharLM) -> None:
    vocab = task.vocabulary()
    train = task.split_text("train")
    assert vocab[0] == UNK and vocab[1:] == sorted(set(train))
    assert task.head().vocab_size == len(vocab)
    assert task.decode(task.encode(train[:500])) == train[:500]
    assert task.encode("\u00e9")[0].item() == 0  # never seen in training -> <unk>
    # the same config gives the same vocabulary (what an exported model relies on)
    assert get_task(task.to_config()).vocabulary() == vocab


def test_windows_are_shifted_by_one(task: CharLM) -> None:
    for s in SPLITS:
        data = task.split(s)
        inputs, targets = data["inputs"], data["targets"]
        n, L = inputs.shape
        assert L == 64 and n == (len(task.split_text(s)) - 1) // 64
        assert torch.equal(inputs.flatten()[1:], targets.flatten()[:-1])
        assert task.decode(inputs.flatten()) == task.split_text(s)[: n * L]
        assert task.decode(targets.flatten()) == task.split_text(s)[1 : n * L + 1]


class Constant(nn.Module):
    """Logits that ignore the input: uniform (zeros) or a fixed distribution."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, inputs: torch.Tensor, *, padding_mask=None) -> torch.Tensor:
        return self.logits.expand(*inputs.shape, -1)


def test_bpc_is_exact(task: CharLM) -> None:
    V = len(task.vocabulary())
    dm = task.datamodule()
    uniform = task.evaluate(Constant(torch.zeros(V)), dm.val_dataloader())
    assert uniform == pytest.approx(math.log2(V), rel=1e-6)
    # a unigram model: bpc is the cross-entropy of the val characters under it, in bits
    probs = torch.rand(V, generator=torch.Generator().manual_seed(0)) + 0.1
    probs = probs / probs.sum()
    targets = task.split("val")["targets"].flatten()
    expected = -torch.log2(probs[targets].double()).mean().item()
    assert task.evaluate(Constant(probs.log()), dm.val_dataloader()) == pytest.approx(expected)
    batch = next(iter(dm.val_dataloader()))
    num, count = task.metric_counts(torch.zeros(*batch["inputs"].shape, V), batch)
    assert count == batch["targets"].numel() and num == pytest.approx(count * math.log2(V))
    # bits and the training loss (nats) agree
    loss = task.loss(Constant(probs.log())(batch["inputs"]), batch)
    num, count = task.metric_counts(Constant(probs.log())(batch["inputs"]), batch)
    assert num / count == pytest.approx(loss.item() / math.log(2), rel=1e-5)


def test_invalid_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"texts: unknown text 'nope'; valid: .*alice"):
        CharLM(texts=["nope"])
    with pytest.raises(ValueError, match="texts"):
        CharLM(texts="alice_in_wonderland")
    with pytest.raises(ValueError, match="val_frac"):
        CharLM(val_frac=0.0)
    with pytest.raises(ValueError, match="seq_len"):
        CharLM(seq_len=0)
    with pytest.raises(ValueError, match="fewer than one window"):
        CharLM(texts=["as_you_like_it"], seq_len=100000).split("val")
