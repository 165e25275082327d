"""Handwritten digits: scikit-learn's bundled 8x8 images (UCI optdigits test set, 1797 images,
10 classes), classified from a grid of patches (the ``image_cls`` head, e.g. 2x2 patches ->
a 4x4 token grid), for image spaces such as ``metaformer``.

The data ships inside scikit-learn (``sklearn.datasets.load_digits``), so nothing downloads.
Splits are a stratified partition drawn with ``seed``: in every class, a seeded permutation
gives the first ``test_frac`` of its images to test, the next ``val_frac`` to val, the rest to
train. Pixels (0..16) are standardised with the training split's mean and deviation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from common.splits import stratified_split
from nas.tasks.base import Task, register_task
from nas.tasks.splits import FixedSplits
from search_spaces import HeadSpec

IMAGE_SIZE, NUM_CLASSES = 8, 10


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images (N, 1, 8, 8) float32 with pixel values 0..16, and labels (N,) long."""
    from sklearn.datasets import load_digits  # imported here: only this task needs sklearn

    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(data.target, dtype=torch.long)


@register_task("digits")
class Digits(FixedSplits, Task):
    """scikit-learn 8x8 digits on a patch grid; metric: classification accuracy."""

    metric_name = "accuracy"
    direction = "maximize"

    def __init__(
        self,
        *,
        patch_size: int = 2,
        val_frac: float = 0.15,
        test_frac: float = 0.15,
        batch_size: int = 64,
        seed: int = 0,
        latency_shape: tuple[int, int, int, int] | list[int] = (1, 1, 8, 8),
    ) -> None:
        if not isinstance(patch_size, int) or patch_size < 1 or IMAGE_SIZE % patch_size:
            raise ValueError(f"Digits.patch_size must divide {IMAGE_SIZE}, but got {patch_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"Digits.batch_size must be a positive integer, but got {batch_size!r}"
            )
        for field, value in (("val_frac", val_frac), ("test_frac", test_frac)):
            if not 0 < value < 0.5:
                raise ValueError(f"Digits.{field} must be in (0, 0.5), but got {value!r}")
        latency_shape = tuple(latency_shape)
        ok = len(latency_shape) == 4 and min(latency_shape) >= 1 and latency_shape[1] == 1
        if not (ok and latency_shape[2] == latency_shape[3] and latency_shape[2] % patch_size == 0):
            raise ValueError(
                f"Digits.latency_shape must be (batch, 1, S, S) with S a multiple of "
                f"patch_size={patch_size}, got {latency_shape!r}"
            )
        self.patch_size, self.val_frac, self.test_frac = patch_size, val_frac, test_frac
        self.batch_size, self.seed, self.latency_shape = batch_size, seed, latency_shape

    def head(self) -> HeadSpec:
        return HeadSpec(
            kind="image_cls",
            num_classes=NUM_CLASSES,
            image_size=IMAGE_SIZE,
            patch_size=self.patch_size,
            in_chans=1,
        )

    def _make_split(self, index: int) -> dict[str, torch.Tensor]:
        if "_data" not in self.__dict__:
            images, labels = load_digit_images()
            train, val, test = stratified_split(labels, (self.val_frac, self.test_frac), self.seed)
            mean, std = images[train].mean(), images[train].std()  # scalars, training split only
            self._data = ((images - mean) / std, labels, (train, val, test))
        images, labels, indices = self._data
        rows = indices[index]  # index follows SPLITS: train, val, test
        return {"inputs": images[rows], "targets": labels[rows]}

    def metric_counts(
        self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[float, int]:
        """Correct argmax predictions (outputs (B, 10)) and the number of images."""
        targets = batch["targets"]
        return float((outputs.argmax(dim=-1) == targets).sum()), int(targets.numel())
