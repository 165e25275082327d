"""The offline image set of the DiT teacher: scikit-learn's bundled handwritten digits
(``sklearn.datasets.load_digits``: the UCI optdigits test set, 1797 8x8 grey images, 10 classes),
upsampled to 16x16 (bilinear), scaled from 0..16 to [-1, 1], 1 channel. With the ``DiT-digits``
preset's patch size 2 an image is an 8x8 grid of 64 tokens.

The split is fixed: per class, a permutation drawn from ``SPLIT_SEED`` gives the first 20% to the
held-out set (359 images) and the rest to train (1438). Nothing downloads: the data ships inside
scikit-learn.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from common.splits import stratified_split

IMAGE_SIZE, CHANNELS, NUM_CLASSES = 16, 1, 10
HELDOUT_FRACTION, SPLIT_SEED = 0.2, 0
SPLITS = ("train", "heldout")


@lru_cache(maxsize=1)
def _all() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # imported here: only this data set needs sklearn

    data = load_digits()
    x = (
        torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    )  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    return (x * 2 - 1).clamp(-1, 1), torch.as_tensor(data.target, dtype=torch.long)


@lru_cache(maxsize=1)
def _split() -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out), stratified by class and seeded by ``SPLIT_SEED``."""
    train, _, heldout = stratified_split(_all()[1], (0.0, HELDOUT_FRACTION), SPLIT_SEED)
    return train, heldout


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 16, 16) in [-1, 1] and labels (N,) of ``split`` (``train`` or ``heldout``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; available: {', '.join(SPLITS)}")
    images, labels = _all()
    idx = _split()[SPLITS.index(split)]
    return images[idx].clone(), labels[idx].clone()
