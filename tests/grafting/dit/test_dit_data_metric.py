"""The digits data (fixed stratified split, 16x16 in [-1, 1]) and the quality metric: a Fréchet
distance of a set with itself is ~0 and grows from held-out digits to noise; the classifier is
deterministic, cached by path, and reads the digits."""

from __future__ import annotations

import pytest
import torch

from grafting.dit import data, metric
from grafting.dit.data import digits


@pytest.fixture(scope="module")
def clf() -> metric.DigitClassifier:
    return metric.train_classifier(epochs=2)  # a quick one; the metric trains 10 epochs


def test_digits_split():
    x, y = digits("train")
    xh, yh = digits("heldout")
    assert x.shape == (1438, 1, 16, 16) and xh.shape == (359, 1, 16, 16)
    assert x.min() == -1 and x.max() == 1
    assert torch.bincount(yh).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    flat = {tuple(v.flatten().tolist()) for v in x}
    assert not any(tuple(v.flatten().tolist()) in flat for v in xh[:50])  # disjoint
    assert torch.equal(digits("train")[0], x)
    # the partition itself is pinned: a trained teacher's held-out images must stay held out
    heldout = data._split()[1]
    assert heldout[:8].tolist() == [1, 2, 6, 10, 13, 16, 22, 25] and int(heldout.sum()) == 331046
    with pytest.raises(ValueError, match="unknown digits split 'test'; available: train, heldout"):
        digits("test")


def test_frechet_distance_orders_sets(clf):
    x, _ = digits("train")
    xh, _ = digits("heldout")
    noise = torch.randn(359, 1, 16, 16, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    same = metric.frechet_distance(xh, xh, clf)
    floor = metric.frechet_distance(x, xh, clf)
    assert abs(same) < 1e-6 * floor
    assert floor < metric.frechet_distance(x, noise, clf) / 10
    with pytest.raises(ValueError, match="at least 2 fake images, got 1"):
        metric.frechet_distance(x, xh[:1], clf)


def test_conditional_accuracy(clf):
    xh, yh = digits("heldout")
    assert metric.conditional_accuracy(xh, yh, clf) > 0.8
    assert metric.conditional_accuracy(xh, (yh + 1) % 10, clf) < 0.2


def test_classifier_is_deterministic_and_cached(clf, tmp_path):
    path = tmp_path / "c.safetensors"
    trained = metric.classifier(path, epochs=2)
    assert path.is_file()
    for a, b in zip(trained.state_dict().values(), clf.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    cached = metric.classifier(path)  # read, not trained (10 epochs would differ)
    for a, b in zip(cached.state_dict().values(), clf.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    path.write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read the digit classifier"):
        metric.classifier(path)
