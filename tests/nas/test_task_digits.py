"""Digits: stratified seeded splits that partition the data, standardised pixels, and the
``metaformer`` space building and running on its patch-grid head."""

from __future__ import annotations

import random

import pytest
import torch

from common.splits import stratified_split
from nas.tasks.digits import Digits, load_digit_images
from search_spaces import build_model
from search_spaces.space import load_space


@pytest.fixture(scope="module")
def task() -> Digits:
    return Digits()


def test_splits_partition_the_data_stratified() -> None:
    _, labels = load_digit_images()
    parts = stratified_split(labels, (0.15, 0.15), seed=0)
    together = torch.cat(parts)
    assert len(together) == len(labels) == 1797 and len(set(together.tolist())) == 1797
    for part, frac in zip(parts, (0.7, 0.15, 0.15), strict=True):
        counts = torch.bincount(labels[part], minlength=10).double()
        assert ((counts / torch.bincount(labels).double() - frac).abs() < 0.02).all()
    again = stratified_split(labels, (0.15, 0.15), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not torch.equal(parts[2], stratified_split(labels, (0.15, 0.15), seed=1)[2])


def test_split_tensors(task: Digits) -> None:
    images, labels = load_digit_images()
    train = task.split("train")["inputs"]
    assert train.shape[1:] == (1, 8, 8) and train.dtype == torch.float32
    assert abs(train.mean().item()) < 1e-5 and abs(train.std().item() - 1) < 1e-4
    sizes = [len(task.split(s)["targets"]) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797
    # the test images are the raw images, standardised with the training statistics
    test_idx = stratified_split(labels, (task.val_frac, task.test_frac), task.seed)[2]
    raw_train = images[stratified_split(labels, (task.val_frac, task.test_frac), task.seed)[0]]
    expected = (images[test_idx] - raw_train.mean()) / raw_train.std()
    assert torch.allclose(task.split("test")["inputs"], expected)
    assert torch.equal(task.split("test")["targets"], labels[test_idx])


def test_metaformer_space_builds_and_runs_on_the_digits_head(task: Digits) -> None:
    space = load_space("metaformer")
    head = task.head()
    assert space.baseline().head == head  # the space is configured for this task
    batch = next(iter(task.datamodule(batch_size=16).val_dataloader()))
    archs = [space.baseline(head)] + [space.sample(random.Random(s), head) for s in range(6)]
    for arch in archs:
        assert arch.grid == (4, 4)
        model = build_model(arch)
        with torch.inference_mode():
            assert task.run_model(model, batch).shape == (16, 10)
            assert model(task.example_input()).shape == (1, 10)
    # patch size 4 gives a 2x2 grid
    coarse = Digits(patch_size=4)
    assert space.baseline(coarse.head()).grid == (2, 2)


def test_invalid_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        Digits(patch_size=3)
    with pytest.raises(ValueError, match="test_frac"):
        Digits(test_frac=0.6)
    with pytest.raises(ValueError, match="latency_shape"):
        Digits(latency_shape=[1, 3, 8, 8])
