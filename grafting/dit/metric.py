"""The quality metric of digit samples: a Fréchet distance in the feature space of a small CNN
trained on the teacher's training split (Inception's weights cannot be downloaded here), and the
conditional accuracy (how often the CNN reads a sample as the class it was generated for).

``frechet_distance`` is torchmetrics' ``FrechetInceptionDistance`` with ``feature=`` the CNN's
64-d penultimate features (no torch-fidelity needed). Samples are compared with the train split (the
teacher's data); the floor is the held-out split's distance to it (both ~360 images).

``python -m grafting.dit.metric base=DIR [per_class=36 sampler=ddim steps=50 cfg_scale=2]``
prints both numbers for a model (see ``conf/dit_metric.yaml``). What the metric reads on the
default teacher, its undertrained copy and real held-out images, with the commands: the
README, "Grafting a diffusion transformer (DiT)".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from common.atomic import atomic_path, atomic_write_text
from grafting.dit.data import CHANNELS, IMAGE_SIZE, NUM_CLASSES, digits
from grafting.dit.sample import check_sampling, class_grid, load_base, preset_alias
from search_spaces.checks import user_input
from search_spaces.cli import UsageError, run_cli


class DigitClassifier(nn.Module):
    """Three 3x3 convolutions (16x16 -> 8x8 -> 4x4), then a linear layer to 64 features (kept
    spatial: where a stroke is matters for digits) and a linear head."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(CHANNELS, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Flatten(),  # (N, 64 * 4 * 4)
            nn.Linear(64 * (IMAGE_SIZE // 4) ** 2, self.num_features),
            nn.GELU(),
        )
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, 10) logits


class _Features(nn.Module):
    """The classifier as torchmetrics' feature extractor: images -> (N, num_features)."""

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier, self.num_features = classifier, classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image moved by up to 1 pixel in each direction (edge padding): augmentation."""
    pad = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dy, dx = torch.randint(0, 3, (2,), generator=g).tolist()
    return pad[..., dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]


def train_classifier(*, epochs: int = 10, seed: int = 0, batch_size: int = 64) -> DigitClassifier:
    """A classifier of the train split, a function of ``seed`` (Adam, shifted copies)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier()
    x, y = digits("train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 3e-3, total_steps=epochs * -(-len(x) // batch_size)
    )
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().requires_grad_(False)


def classifier(
    path: str | Path | None = None, *, seed: int = 0, epochs: int = 10
) -> DigitClassifier:
    """The metric's classifier: read from ``path`` (safetensors) when it exists; otherwise trained
    (deterministic, seconds) and, with a ``path``, cached there."""
    if path is not None and Path(path).is_file():
        model = DigitClassifier()
        try:
            model.load_state_dict(load_file(str(path)))
        except (SafetensorError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0]
            raise ValueError(f"cannot read the digit classifier {str(path)!r}: {first}") from None
        return model.eval().requires_grad_(False)
    model = train_classifier(seed=seed, epochs=epochs)
    if path is not None:
        save_classifier(model, path)
    return model


def save_classifier(model: DigitClassifier, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return Path(path)


@torch.no_grad()
def frechet_distance(
    real: torch.Tensor, fake: torch.Tensor, classifier: DigitClassifier, batch_size: int = 512
) -> float:
    """Fréchet distance between the classifier features of two image sets (N, 1, 16, 16)."""
    for name, images in (("real", real), ("fake", fake)):
        if len(images) <= 1:
            raise ValueError(
                f"a Fréchet distance needs at least 2 {name} images, got {len(images)}"
            )
    from torchmetrics.image.fid import FrechetInceptionDistance  # here: its import takes seconds

    fid = FrechetInceptionDistance(feature=_Features(classifier.eval()))
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            fid.update(images[i : i + batch_size], real=is_real)
    return float(fid.compute())


@torch.no_grad()
def conditional_accuracy(
    samples: torch.Tensor, labels: torch.Tensor, classifier: DigitClassifier
) -> float:
    """The fraction of ``samples`` that the classifier assigns to their ``labels``."""
    predicted = torch.cat([classifier(s).argmax(-1) for s in samples.split(512)])
    return (predicted == labels).float().mean().item()


def evaluate(
    model: nn.Module,
    clf: DigitClassifier,
    *,
    per_class: int = 36,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_scale: float = 2.0,
    seed: int = 0,
) -> dict[str, float]:
    """Sample ``per_class`` images of each digit and score them against the train split:
    ``frechet`` and ``accuracy`` of the samples, ``floor_frechet`` and ``floor_accuracy`` of
    the held-out real images (the best a model of this data can expect)."""
    images = class_grid(
        model, per_class, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed
    )
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    train, _ = digits("train")
    heldout, heldout_labels = digits("heldout")
    return {
        "frechet": frechet_distance(train, images, clf),
        "accuracy": conditional_accuracy(images, labels, clf),
        "floor_frechet": frechet_distance(train, heldout, clf),
        "floor_accuracy": conditional_accuracy(heldout, heldout_labels, clf),
        "samples": len(images),
    }


def main_cfg(cfg: DictConfig) -> int:
    check_sampling(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model = load_base(cfg)
    if (model.config.input_size, model.config.in_channels) != (IMAGE_SIZE, CHANNELS):
        raise UsageError(
            f"the digit metric needs a {IMAGE_SIZE}x{IMAGE_SIZE}x{CHANNELS} DiT, but {cfg.base!r} is not"
        )
    with user_input(f"classifier={cfg.classifier}"):
        clf = classifier(cfg.classifier, seed=int(cfg.classifier_seed))
    result = evaluate(
        model,
        clf,
        per_class=int(cfg.per_class),
        sampler=str(cfg.sampler),
        steps=int(cfg.steps),
        cfg_scale=float(cfg.cfg_scale),
        seed=int(cfg.seed),
    )
    print(f"{'images':<28} {'Fréchet':>9} {'cond. acc.':>11}")
    print(
        f"{'held-out real (floor)':<28} {result['floor_frechet']:>9.2f} {result['floor_accuracy']:>11.3f}"
    )
    print(f"{str(cfg.base)[-28:]:<28} {result['frechet']:>9.2f} {result['accuracy']:>11.3f}")
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps({**result, "base": str(cfg.base)}, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(main_cfg, "dit_metric", preset_alias(argv, "base_preset"))


if __name__ == "__main__":
    sys.exit(main())
