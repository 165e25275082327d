"""Stage 2: end-to-end distillation of the grafted model against the frozen teacher (Lightning).

Encoders: ``1 - cos`` between pooled sentence embeddings plus ``mse_weight`` x MSE of the token
states; decoders: KL(teacher || student) of next-token distributions at temperature ``T`` (x T²).
``train``: ``grafted`` (the new operators only), ``all`` (every parameter), or ``lora`` (new
operators + low-rank adapters on the host's other linears, merged back after training).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from peft import PeftModel
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.fit import fit
from common.quiet import quiet_lightning
from common.schedule import warmup_cosine, warmup_fraction
from common.step_sampler import StepSampler
from grafting.checkpoints import Host, pool
from grafting.lora import add_lora, merge_lora

TRAIN_MODES = ("grafted", "all", "lora")


class _Batches(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def distill_loss(
    host: Host,
    student: nn.Module,
    teacher: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    temperature: float = 1.0,
    mse_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage 2 loss of one batch and its parts (see the module docstring)."""
    mask = batch["attention_mask"].bool()
    if host.is_encoder:
        with torch.no_grad():
            t_out = teacher(**batch).last_hidden_state
        s_out = student(**batch).last_hidden_state
        t_emb, s_emb = (pool(host, h, batch["attention_mask"]) for h in (t_out, s_out))
        cos = F.cosine_similarity(s_emb, t_emb, dim=-1).mean()
        mse = F.mse_loss(s_out[mask], t_out[mask])
        return (1 - cos) + mse_weight * mse, {"cos": cos.item(), "mse": mse.item()}
    with torch.no_grad():
        t_logits = teacher(**batch).logits[mask]
    s_logits = student(**batch).logits[mask]  # (tokens, vocab): every real position
    kl = F.kl_div(
        F.log_softmax(s_logits / temperature, -1),
        F.log_softmax(t_logits / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return kl * temperature**2, {"kl": kl.item()}


class DistillModule(L.LightningModule):
    """Lightning wrapper: the student learns, the teacher is frozen and not a submodule (so its
    weights are neither trained nor checkpointed)."""

    def __init__(
        self, host: Host, student: nn.Module, teacher: nn.Module, cfg: dict[str, Any]
    ) -> None:
        super().__init__()
        self.host, self.student, self.cfg = host, student, cfg
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self.strict_loading = False  # checkpoints hold the trainable weights only

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {f"student.{n}" for n, p in self.student.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.student.eval()  # no dropout: we match a deterministic teacher
        loss, parts = distill_loss(
            self.host,
            self.student,
            self.teacher,
            batch,
            temperature=float(self.cfg.get("temperature", 1.0)),
            mse_weight=float(self.cfg.get("mse_weight", 1.0)),
        )
        self.log("train/loss", loss, prog_bar=True)
        for k, v in parts.items():
            self.log(f"train/{k}", v, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(self.cfg["lr"]), weight_decay=0.0)
        steps = max(1, int(self.cfg["steps"]))
        warmup = warmup_fraction(steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup, steps, floor=0.0)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def set_trainable(
    student: nn.Module, wrappers: list[nn.Module], mode: str, lora_rank: int, lora_alpha: float
) -> tuple[int, PeftModel | None]:
    """Freeze/unfreeze per ``mode``; returns the number of trainable parameters and, for
    ``lora``, the ``PeftModel`` whose adapters ``merge_lora`` folds back after training."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"stage2.train must be one of {TRAIN_MODES}, but got {mode!r}")
    student.requires_grad_(mode == "all")
    adapters = None
    if mode == "lora":
        skip = list(wrappers)
        if student.get_output_embeddings() is not None:
            skip.append(student.get_output_embeddings())  # tied to the input embeddings
        adapters = add_lora(student, skip, lora_rank, lora_alpha)
    for w in wrappers:
        w.requires_grad_(True)
    return sum(p.numel() for p in student.parameters() if p.requires_grad), adapters


def train(
    host: Host,
    student: nn.Module,
    teacher: nn.Module,
    wrappers: list[nn.Module],
    batches: list[dict[str, torch.Tensor]],
    cfg: dict[str, Any],
    log_dir: Path,
    progress: bool = True,
    checkpoints: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Distil for ``cfg['steps']`` optimiser steps; logs to ``log_dir`` (CSV). Returns the
    trainable parameter count, first/last loss and seconds. With ``checkpoints``, saves
    ``last.ckpt`` there every ``cfg['checkpoint_every']`` steps and resumes from it; the batch of
    step ``s`` depends only on (``seed``, ``s``), so a resumed run equals an uninterrupted one."""
    start = time.perf_counter()
    steps = int(cfg["steps"])
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0}
    mode = str(cfg.get("train", "grafted"))
    trainable, adapters = set_trainable(
        student, wrappers, mode, int(cfg.get("lora_rank", 8)), float(cfg.get("lora_alpha", 16))
    )
    module = DistillModule(host, student, teacher, dict(cfg))
    logger = CSVLogger(str(log_dir), name="stage2", version="")
    callbacks = [TQDMProgressBar(refresh_rate=1)] if progress else []
    last = None
    if checkpoints is not None:
        every = int(cfg.get("checkpoint_every", 50))
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints, save_last=True, save_top_k=0, every_n_train_steps=every
            )
        )
        last = checkpoints / "last.ckpt" if (checkpoints / "last.ckpt").is_file() else None
    with quiet_lightning():  # the Trainer prints its hardware lines when built
        trainer = L.Trainer(
            max_steps=steps,
            accelerator=str(cfg.get("accelerator", "cpu")),
            devices=1,
            logger=logger,
            log_every_n_steps=max(1, min(10, steps)),
            enable_checkpointing=checkpoints is not None,
            enable_progress_bar=progress,
            callbacks=callbacks,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
    # one epoch of the remaining steps' batches (a new permutation of the calibration batches
    # every pass), so the progress bar counts steps to the end, with the loss and the time left
    sampler = StepSampler(len(batches), 1, steps, lambda: module.global_step, seed)
    loader = DataLoader(_Batches(batches), batch_size=None, sampler=sampler)
    if last is not None and progress:
        print(f"stage 2: resuming from {last}", flush=True)
    with quiet_lightning():
        fit(trainer, module, loader, ckpt_path=last, weights_only=True)
    if adapters is not None:
        merge_lora(adapters)
    student.requires_grad_(False).eval()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "steps": steps,
        "train": mode,
        "trainable_params": trainable,
        "seconds": time.perf_counter() - start,
        "final": metrics,
    }
