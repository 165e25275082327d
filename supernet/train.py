"""Training a supernet: ``train_supernet(cfg, space, task, out)``. The command is
``python -m nas.train_supernet`` (it builds the task; tasks live in ``nas``).

Trains the supernet of a space on a task with Lightning (sandwich rule, in-place distillation),
checkpointing every ``train.val_every`` steps; rerunning the same training resumes from the last
checkpoint. Prints the validation metric of the reference subnets and a few random ones before
and after training, and writes into ``out``: ``supernet.safetensors`` + ``supernet.json`` (what
the search reuses), ``subnets.csv`` (that table), ``config.yaml``, ``logs/`` (metrics), and
``checkpoints/``.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from common.fit import fit
from common.quiet import quiet_lightning
from search_spaces import Arch
from search_spaces.checks import check_choice, check_int, check_number, user_input
from search_spaces.space import SearchSpace
from supernet.data import resumable_loader
from supernet.io import save_supernet
from supernet.supernet import Supernet
from supernet.training import SupernetModule


def report_subnets(supernet: Supernet, n_random: int, seed: int) -> list[tuple[str, Arch]]:
    """The subnets whose metric is reported: teacher, smallest, baseline and random ones."""
    space, head = supernet.space, supernet.head_spec
    rng = random.Random(seed + 7919)
    refs = [
        ("teacher", space.teacher(head)),
        ("smallest", space.smallest(head)),
        ("baseline", space.baseline(head)),
    ]
    return refs + [(f"random{i}", space.sample(rng, head=head)) for i in range(n_random)]


def evaluate_subnets(
    supernet: Supernet, task, subnets, loader, max_batches: int
) -> dict[str, float]:
    out = {}
    for name, arch in subnets:
        supernet.activate(arch)
        out[name] = task.evaluate(supernet, loader, max_batches=max_batches)
    return out


LOGGERS = ("csv", "wandb")


def make_logger(cfg: DictConfig, out: Path):
    if cfg.logger == "wandb":
        import os

        os.environ.setdefault("WANDB_MODE", "offline")
        return WandbLogger(save_dir=str(out), project="nas-supernet")
    return CSVLogger(save_dir=str(out), name="logs", version="")


def check_training(cfg: DictConfig) -> None:
    """The ``logger``, ``train`` and ``report`` settings, checked before anything is written (a
    bad one would otherwise stop the run after the folder is made, or be silently accepted)."""
    t, r = cfg.train, cfg.report
    check_choice("logger", cfg.logger, LOGGERS)
    for name in ("max_steps", "batch_size", "val_every"):
        check_int(f"train.{name}", t[name])
    for name in ("num_random", "teacher_steps", "warmup_steps"):
        check_int(f"train.{name}", t[name], minimum=0)
    check_number("train.limit_val_batches", t.limit_val_batches, above=0)
    check_number("train.lr", t.lr, above=0)
    check_number("train.temperature", t.temperature, above=0)
    check_number("train.weight_decay", t.weight_decay, at_least=0)
    check_number("train.distill_weight", t.distill_weight, at_least=0)
    check_number("train.single_mixer_prob", t.single_mixer_prob, at_least=0, at_most=1)
    check_int("report.random_subnets", r.random_subnets, minimum=0)
    check_int("report.val_batches", r.val_batches)


def trainer_settings(trainer: DictConfig) -> dict:
    """``cfg.trainer`` for ``lightning.Trainer``; several devices train with DDP (gloo on CPU),
    which must allow parameters a step's subnets leave unused."""
    settings = OmegaConf.to_container(trainer, resolve=True)
    if settings.get("devices", 1) not in (1, "1") and settings.get("strategy", "auto") == "auto":
        settings["strategy"] = "ddp_find_unused_parameters_true"
    return settings


@quiet_lightning()
def train_supernet(cfg: DictConfig, space: SearchSpace, task, out: Path) -> tuple[Supernet, dict]:
    """Train the supernet of ``space`` on ``task`` with the ``seed``, ``logger``, ``train``,
    ``trainer`` and ``report`` settings of ``cfg`` (resuming from ``out/checkpoints/last.ckpt``
    when present); save it into ``out`` and return it with its saved metadata."""
    check_training(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with user_input(f"space {space.source}"):  # an operator refusing a value of the space file
        supernet = Supernet(space, head=task.head())
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    t = cfg.train
    module = SupernetModule(
        supernet,
        task.loss,
        task.metric_counts,
        num_random=t.num_random,
        distill_weight=t.distill_weight,
        temperature=t.temperature,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        max_steps=t.max_steps,
        teacher_steps=t.teacher_steps,
        seed=cfg.seed,
        single_mixer_prob=t.single_mixer_prob,
        mixer_teachers=t.mixer_teachers,
    )
    data = task.datamodule(batch_size=t.batch_size)
    data.setup("fit")
    subnets = report_subnets(supernet, cfg.report.random_subnets, cfg.seed)
    before = evaluate_subnets(
        supernet, task, subnets, data.val_dataloader(), cfg.report.val_batches
    )

    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    trainer = L.Trainer(
        max_steps=t.max_steps,
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        logger=make_logger(cfg, out),
        callbacks=[
            ModelCheckpoint(
                dirpath=ckpt_dir, save_last=True, every_n_train_steps=t.val_every, save_top_k=0
            ),
            TQDMProgressBar(refresh_rate=10),
        ],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # StepSampler splits each step's batch across processes
        **trainer_settings(cfg.trainer),
    )
    if last.exists():
        print(f"resuming from {last}", file=sys.stderr)
    start = time.perf_counter()
    train_loader = resumable_loader(
        data.train_dataloader(), t.max_steps, lambda: module.global_step, cfg.seed
    )
    fit(
        trainer,
        module,
        train_loader,
        data.val_dataloader(),
        ckpt_path=str(last) if last.exists() else None,
        weights_only=True,  # never unpickle: a checkpoint may come from someone else
    )
    seconds = time.perf_counter() - start
    meta = {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "steps": trainer.global_step,
        "train_seconds": round(seconds, 1),
        "seed": cfg.seed,
    }
    if not trainer.is_global_zero:  # with several processes, the first one reports and saves
        return supernet, meta

    supernet.eval()
    after = evaluate_subnets(supernet, task, subnets, data.val_dataloader(), cfg.report.val_batches)
    save_supernet(supernet, out, **meta)
    write_report(out / "subnets.csv", subnets, before, after, task.metric_name)
    return supernet, meta


def write_report(path: Path, subnets, before: dict, after: dict, metric: str) -> None:
    print(f"\nval {metric} of subnets with inherited weights (before -> after training)")
    print(f"{'subnet':<10}{'signature':<18}{'before':>9}{'after':>9}  layers (mixer/channel)")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["subnet", "signature", f"val_{metric}_before", f"val_{metric}_after", "arch"]
        )
        for name, arch in subnets:
            ops = " ".join(f"{layer.mixer.name}/{layer.channel.name}" for layer in arch.layers)
            print(
                f"{name:<10}{arch.signature:<18}{before[name]:>9.4f}{after[name]:>9.4f}  d{arch.dim} {ops}"
            )
            writer.writerow([name, arch.signature, before[name], after[name], ops])
