"""``python -m grafting.dit.sample base=DIR out=grid.png [sampler=ddim steps=50 cfg_scale=2 per_class=8]``

Samples ``per_class`` images of every class from a DiT (a model folder, or an original checkpoint
file, with ``preset=NAME`` where its heads cannot be inferred) and writes them as a PNG grid: one
row per class, upscaled (nearest) so a person can read the digits. See ``conf/dit_sample.yaml``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image
from torchvision.utils import make_grid

from common.atomic import atomic_path
from grafting.dit.diffusion import SAMPLERS, GaussianDiffusion, sample_images
from grafting.dit.model import DiT
from search_spaces.checks import check_choice, check_int, user_input
from search_spaces.cli import UsageError, run_cli


def class_grid(
    model: DiT,
    per_class: int,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_scale: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``per_class`` samples of each class, class-major (N, C, H, W) in [-1, 1]."""
    if per_class < 1:
        raise ValueError(f"per_class must be a positive integer, but got {per_class!r}")
    labels = torch.arange(model.config.num_classes).repeat_interleave(per_class)
    diffusion = GaussianDiffusion(learn_sigma=model.config.learn_sigma)
    return sample_images(
        model, diffusion, labels, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed
    )


def save_grid(images: torch.Tensor, per_class: int, path: str | Path, scale: int = 4) -> Path:
    """Write class-major images in [-1, 1] as a PNG (rows = classes), upscaled ``scale`` times
    (nearest), atomically."""
    if images.shape[1] not in (1, 3):  # latents (the original's 4 channels): their first 3
        images = images[:, :3]
    grid = make_grid((images + 1) / 2, nrow=per_class, padding=1, pad_value=0.5)  # (3, H, W)
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return Path(path)


def preset_alias(argv: Sequence[str] | None, key: str) -> list[str]:
    """``preset=NAME`` as ``key=NAME``: ``preset`` names a config group of the platform
    (``conf/preset/``), so no command can have a config key of that name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return [f"{key}={a.partition('=')[2]}" if a.startswith("preset=") else a for a in argv]


def check_sampling(cfg: DictConfig) -> None:
    """The settings ``sample`` and ``metric`` share, checked before the model is loaded."""
    check_int("threads", cfg.threads, optional=True)
    check_int("per_class", cfg.per_class)
    check_choice("sampler", cfg.sampler, SAMPLERS)
    check_int("steps", cfg.steps, maximum=1000)  # the training timesteps
    if not cfg.base:
        raise UsageError(
            "choose the model with base=DIR (a DiT folder) or base=FILE.pt preset=NAME"
        )


def load_base(cfg: DictConfig) -> DiT:
    """The DiT ``base=`` (and ``base_preset=``) name; problems are one ``UsageError`` naming it."""
    from grafting.dit.io import load_dit

    with user_input(f"base={cfg.base}"):
        return load_dit(cfg.base, preset=cfg.base_preset) if cfg.base_preset else load_dit(cfg.base)


def main_cfg(cfg: DictConfig) -> int:
    check_sampling(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise UsageError(f"out {str(out)!r} exists (set overwrite=true)")
    model = load_base(cfg)
    images = class_grid(
        model,
        int(cfg.per_class),
        sampler=str(cfg.sampler),
        steps=int(cfg.steps),
        cfg_scale=float(cfg.cfg_scale),
        seed=int(cfg.seed),
    )
    save_grid(images, int(cfg.per_class), out, scale=int(cfg.scale))
    print(
        f"saved {len(images)} samples ({model.config.num_classes} classes x {cfg.per_class}) to {out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(main_cfg, "dit_sample", preset_alias(argv, "base_preset"))


if __name__ == "__main__":
    sys.exit(main())
