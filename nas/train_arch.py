"""Stand-alone training of one architecture on a task (Lightning): the counterpart of
``supernet.training`` for a single plain model.

The search (fine-tuning candidates), ``nas.export`` (``finetune_steps``, ``retrain=true``) and the
ranking benchmark (architectures trained from scratch) all call ``train_model``. Training is
reproducible: batch ``s`` is a pure function of (seed, s) (``supernet.data.resumable_loader``)
and every other random draw (dropout) comes from a generator seeded with ``seed``, so the same
model, task and seed give identical weights.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from common.fit import fit
from common.schedule import warmup_cosine
from nas.tasks.base import Task
from search_spaces import Arch, build_model
from supernet.data import resumable_loader


class ArchModule(L.LightningModule):
    """Lightning wrapper of one model: loss ``task.loss``, validation metric from
    ``task.metric_counts`` (exact over batches), AdamW with warm-up and cosine decay."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        max_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self._val = [0.0, 0]

    def forward(self, batch: dict) -> torch.Tensor:
        return self.task.run_model(self.model, batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.task.loss(self(batch), batch)
        self.log(
            "train/loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            batch_size=len(batch["inputs"]),
        )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        self.log("val/loss", self.task.loss(out, batch), batch_size=len(batch["inputs"]))
        total, count = self.task.metric_counts(out, batch)
        self._val = [self._val[0] + float(total), self._val[1] + int(count)]

    def on_validation_epoch_end(self) -> None:
        total, count = self._val
        self.log(f"val/{self.task.metric_name}", total / max(count, 1), prog_bar=True)
        self._val = [0.0, 0]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, self.warmup_steps, self.max_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@contextmanager
def _quiet(progress: bool):
    """Silence Lightning's per-run banners (and, without a progress bar, its info lines): the
    search calls ``train_model`` once per candidate."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
        for lg in loggers if not progress else []:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def train_model(
    model: nn.Module,
    task: Task,
    *,
    max_steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    val_every: int | None = None,
    val_batches: int | None = None,
    grad_clip: float | None = 1.0,
    out: str | Path | None = None,
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train ``model`` in place for exactly ``max_steps`` optimiser steps on ``task`` and return
    ``{"val_metric", "metric", "steps", "seconds", "train_loss"}`` (``val_metric``: the task's
    metric over the first ``val_batches`` validation batches, all by default, after training).

    ``val_every`` also validates during training (logged); ``out`` writes CSV logs to
    ``out/logs``. ``trainer_kwargs`` go to ``lightning.Trainer`` (default: CPU, 32-bit).
    ``max_steps=0`` only evaluates. The model's train/eval mode is restored afterwards."""
    if not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"`max_steps` must be a non-negative integer, but got {max_steps=}")
    if val_every is not None and (not isinstance(val_every, int) or val_every < 1):
        raise ValueError(f"`val_every` must be a positive integer or None, but got {val_every=}")
    data = task.datamodule(batch_size=batch_size)
    data.setup("fit")
    module = ArchModule(
        model,
        task,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
    )
    was_training = model.training
    start = time.perf_counter()
    train_loss, steps = float("nan"), 0
    if max_steps > 0:
        validate = val_every is not None
        with _quiet(progress), torch.random.fork_rng(devices=[]):
            trainer = L.Trainer(
                max_steps=max_steps,
                # the loader holds exactly max_steps batches: one epoch, validated every val_every
                val_check_interval=val_every if validate else None,
                check_val_every_n_epoch=None if validate else 1,
                limit_val_batches=(val_batches or 1.0) if validate else 0,
                num_sanity_val_steps=0,
                logger=CSVLogger(save_dir=str(out), name="logs", version="") if out else False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
                callbacks=[TQDMProgressBar(refresh_rate=10)] if progress else [],
                gradient_clip_val=grad_clip,
                log_every_n_steps=min(50, max_steps),
                **{"accelerator": "cpu", "devices": 1, "precision": "32-true", **trainer_kwargs},
            )
            loader = resumable_loader(
                data.train_dataloader(), max_steps, lambda: module.global_step, seed
            )
            torch.manual_seed(seed)  # dropout and any other draw inside training
            model.train()
            fit(trainer, module, loader, data.val_dataloader() if validate else None)
        steps = trainer.global_step
        loss = trainer.callback_metrics.get("train/loss")
        train_loss = float(loss) if loss is not None else train_loss
    seconds = time.perf_counter() - start
    model.train(was_training)
    metric = task.evaluate(model, data.val_dataloader(), max_batches=val_batches)
    return {
        "val_metric": metric,
        "metric": task.metric_name,
        "steps": steps,
        "seconds": round(seconds, 3),
        "train_loss": train_loss,
    }


def init_model(arch: Arch, seed: int = 0) -> nn.Module:
    """``build_model(arch)`` initialised from ``seed`` (global RNG left untouched): the start of
    training an architecture from scratch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch)


def train_from_scratch(
    arch: Arch, task: Task, *, seed: int = 0, **kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model of ``arch`` (initialised from ``seed``) trained by ``train_model``."""
    model = init_model(arch, seed)
    return model, train_model(model, task, seed=seed, **kwargs)
