"""``python -m grafting.dit.train out=DIR [steps=... seed=... preset=...]`` (``preset=NAME`` is
``model.name=NAME``, a key of ``conf/dit_train.yaml``)

Trains a class-conditional DiT on the 16x16 digits (``grafting.dit.data``) with Lightning
(AdamW, a warm-up then a constant or cosine learning rate, EMA weights) and writes to ``out``, atomically:

- ``config.json`` + ``model.safetensors``: the EMA weights, the teacher (``load_dit(out)``);
- ``early/``: the EMA weights at ``early_fraction`` (10%) of training, an undertrained teacher;
- ``train.json``: steps, seed, wall time, final loss, and the training compute (FLOPs and
  image-steps) that distillation costs are reported against;
- ``samples.png``: a DDIM + CFG grid, one row per class; ``logs/metrics.csv``: the loss curve;
  ``config.yaml``: the resolved run config.

The default run's time and compute: ``train.json``, and BENCHMARKS.md "Grafting the small DiT".

On CPU a run is a function of its ``seed`` (weights equal bit for bit); GPU kernels may differ in
the last bits. See ``conf/dit_train.yaml`` for every setting.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from common.atomic import atomic_dir
from common.fit import fit
from common.quiet import quiet_lightning
from common.schedule import warmup_cosine
from grafting.dit.data import CHANNELS, IMAGE_SIZE, NUM_CLASSES, digits
from grafting.dit.diffusion import GaussianDiffusion
from grafting.dit.io import write_dit
from grafting.dit.model import DiT, DiTConfig, forward_flops
from grafting.dit.sample import class_grid, preset_alias, save_grid
from search_spaces.checks import check_int, check_number, user_input
from search_spaces.cli import UsageError, run_cli


class DiffusionModule(L.LightningModule):
    """The diffusion loss of ``model`` on (image, label) batches; keeps an EMA copy updated after
    every step with decay ``min(ema_decay, (1 + n) / (10 + n))`` (so early copies are usable), and
    a snapshot of it at step ``early_step``."""

    def __init__(self, model: DiT, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.ema = copy.deepcopy(model).requires_grad_(False)  # never called while training
        self.diffusion = GaussianDiffusion(learn_sigma=model.config.learn_sigma)
        self.early: dict[str, torch.Tensor] | None = None
        self.losses: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        t = torch.randint(0, self.diffusion.num_timesteps, (len(x),), device=x.device)
        terms = self.diffusion.training_losses(lambda xt, tt: self.model(xt, tt, y), x, t)
        loss = terms["loss"].mean()
        self.log("loss", loss, prog_bar=True)
        self.log("mse", terms["mse"].mean())
        if "vb" in terms:
            self.log("vb", terms["vb"].mean())
        self.losses.append(loss.item())
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = self.global_step  # optimiser steps done
        decay = min(float(self.cfg["ema_decay"]), (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)
        if n == self.cfg["early_step"]:
            self.early = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(self.cfg["lr"]),
            weight_decay=float(self.cfg["weight_decay"]),
        )
        steps = int(self.cfg["steps"])
        warmup = int(float(self.cfg["warmup"]) * steps)
        floor = float(self.cfg["lr_floor"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup, steps, floor=floor)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def model_config(cfg: dict[str, Any]) -> DiTConfig:
    """The preset ``model.name`` with the other ``model.*`` keys that are set; it must fit the
    digits' shape."""
    overrides = {k: v for k, v in (cfg.get("model") or {}).items() if v is not None}
    name = overrides.pop("name", "DiT-digits")
    config = DiTConfig.from_preset(str(name), **overrides)
    data = {"input_size": IMAGE_SIZE, "in_channels": CHANNELS, "num_classes": NUM_CLASSES}
    wrong = {k: getattr(config, k) for k, v in data.items() if getattr(config, k) != v}
    if wrong:
        raise ValueError(
            f"model.name={name} does not fit the digits: they need {data}, it has {wrong}"
        )
    return config


def check(cfg: dict[str, Any]) -> DiTConfig:
    """The training settings, checked before anything is written; returns the model config."""
    for key in ("steps", "batch_size"):
        check_int(key, cfg[key])
    check_int("threads", cfg.get("threads"), optional=True)
    check_number("early_fraction", cfg["early_fraction"], at_least=0, below=1)
    check_number("ema_decay", cfg["ema_decay"], at_least=0, below=1)
    with user_input("model"):
        return model_config(cfg)


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train and write ``cfg['out']`` (see the module docstring); returns train.json's content."""
    config = check(cfg)
    out = Path(cfg["out"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg["overwrite"]:
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    steps, batch_size, seed = int(cfg["steps"]), int(cfg["batch_size"]), int(cfg["seed"])
    early = max(1, round(float(cfg["early_fraction"]) * steps)) if cfg["early_fraction"] else -1
    L.seed_everything(seed, workers=False, verbose=False)
    module = DiffusionModule(DiT(config), {**cfg, "early_step": early})
    x, y = digits("train")
    dataset = TensorDataset(x, y)
    sampler = RandomSampler(  # one epoch of exactly `steps` batches: the bar counts to the end
        dataset, num_samples=steps * batch_size, generator=torch.Generator().manual_seed(seed)
    )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
    with atomic_dir(out) as tmp, quiet_lightning():
        trainer = L.Trainer(
            max_steps=steps,
            accelerator=str(cfg["accelerator"]),
            devices=1,
            logger=CSVLogger(str(tmp), name="logs", version=""),
            log_every_n_steps=max(1, min(10, steps)),
            enable_checkpointing=False,
            enable_progress_bar=bool(cfg["progress"]),
            callbacks=[TQDMProgressBar(refresh_rate=10)] if cfg["progress"] else [],
            enable_model_summary=False,
        )
        start = time.perf_counter()
        fit(trainer, module, loader)
        seconds = time.perf_counter() - start
        teacher = module.ema.cpu().eval()
        write_dit(teacher, tmp)
        if module.early is not None:
            early_model = DiT(config)
            early_model.load_state_dict(module.early)
            (tmp / "early").mkdir()
            write_dit(early_model, tmp / "early")
        grid = cfg["grid"]
        images = class_grid(
            teacher,
            int(grid["per_class"]),
            sampler=str(grid["sampler"]),
            steps=int(grid["steps"]),
            cfg_scale=float(grid["cfg_scale"]),
            seed=int(grid["seed"]),
        )
        save_grid(images, int(grid["per_class"]), tmp / "samples.png")
        tail = module.losses[-max(1, steps // 10) :]
        flops = forward_flops(config)
        report = {
            "preset": cfg["model"]["name"],
            "config": config.to_dict(),
            "params": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
            "steps": steps,
            "batch_size": batch_size,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "wall_seconds": round(seconds, 1),
            "final_loss": sum(tail) / len(tail),  # mean over the last 10% of steps
            "last_loss": module.losses[-1],
            "early_step": early if module.early is not None else None,
            "forward_flops_per_image": flops,
            "image_steps": steps * batch_size,  # images seen (forward + backward each)
            "train_flops": 3 * flops * steps * batch_size,  # backward ~ 2x forward
        }
        (tmp / "train.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return report


def main_cfg(cfg: DictConfig) -> int:
    try:
        report = train(OmegaConf.to_container(cfg, resolve=True))
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    print(
        f"trained {report['steps']} steps in {report['wall_seconds']} s, final loss "
        f"{report['final_loss']:.4f}; saved to {cfg.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(main_cfg, "dit_train", preset_alias(argv, "model.name"))


if __name__ == "__main__":
    sys.exit(main())
