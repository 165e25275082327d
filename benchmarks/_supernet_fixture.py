"""Shared by ``benchmarks/ranking.py`` and ``benchmarks/search_efficiency.py``: the space, the
task (with ``--task-override``), and one trained supernet (trained here or loaded with
``--supernet DIR``), plus the one-line error handling of a command.

A supernet is trained with the platform's own ``supernet.train.train_supernet`` and the composed
``conf/train_supernet.yaml`` config, so the benchmark measures the supernet the search would use.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nas.tasks import Task, get_task
from search_spaces.cli import USER_ERRORS, UsageError, compose_config, space_from_config
from search_spaces.space import SearchSpace
from supernet.io import load_supernet
from supernet.supernet import Supernet
from supernet.train import train_supernet

SUPERNET_STEPS = 800  # the benchmarks' default (the quick preset's), so that they share one supernet in DEFAULT_OUT
DEFAULT_OUT, DRY_OUT = Path("runs/bench"), Path("runs/bench-dry")
# --dry-run: a task small enough that a supernet trains in seconds (latency input kept short
# so that a lookup table builds in seconds too), per task
DRY_TASK = {
    "mqar": ("num_train=512", "num_val=64", "num_test=64", "batch_size=16", "latency_shape=[1,64]"),
    "charlm": (
        "texts=[alice_in_wonderland]",
        "seq_len=32",
        "batch_size=16",
        "latency_shape=[1,64]",
    ),
}
DRY_TRAIN = (
    "train.batch_size=16",
    "train.limit_val_batches=1",
    "train.warmup_steps=1",
    "report.val_batches=1",
    "report.random_subnets=0",
)


class Forced:
    """A ``SearchSpace.sample`` suggester: the decisions in ``forced`` (by name, or by the name's
    last part, e.g. ``mixer`` for every ``layerN.mixer``) are fixed, the others drawn from
    ``rng``."""

    def __init__(self, forced: dict[str, object], rng: random.Random) -> None:
        self.forced, self.rng = forced, rng

    def suggest_categorical(self, name: str, choices):
        key = name if name in self.forced else name.rsplit(".", 1)[-1]
        return self.forced[key] if key in self.forced else self.rng.choice(list(choices))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_overrides(pairs: Sequence[str]) -> list[str]:
    """``["seq_len=64", ...]`` -> Hydra overrides of the task config (``task.seq_len=64``)."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--task-override must be key=value, got {pair!r}")
        out.append(f"task.{key}={value}")
    return out


def compose(
    config_name: str,
    space: str,
    task_overrides: Sequence[str],
    *,
    steps: int | None,
    seed: int,
    dry_run: bool,
    threads: int,
    extra: Sequence[str] = (),
    task: str | None = None,
) -> tuple[DictConfig, SearchSpace, Task]:
    """The composed ``conf/<config_name>.yaml`` (``train_supernet`` or ``search``) with ``+space``,
    ``task`` (None: the config's default), the task overrides, the supernet budget and ``extra``
    Hydra overrides; its space and task."""
    overrides = [f"+space={space}", f"seed={seed}", *([f"task={task}"] if task else [])]
    overrides += parse_overrides(task_overrides)
    if dry_run:
        name = compose_config(config_name, overrides).task.name
        if name not in DRY_TASK:
            raise UsageError(f"--dry-run knows tasks {', '.join(DRY_TASK)}, not {name!r}")
        overrides += [f"task.{kv}" for kv in DRY_TASK[name]] + list(DRY_TRAIN)
    if steps is not None:  # Lightning needs val_every <= the steps of the loader's one epoch
        overrides += [f"train.max_steps={steps}", f"train.val_every={min(100, steps)}"]
    overrides += list(extra)
    cfg = compose_config(config_name, overrides)
    try:
        task_obj = get_task(cfg.task)
    except ValueError as e:
        raise UsageError(f"task: {e}") from None
    torch.set_num_threads(threads)
    return cfg, space_from_config(cfg), task_obj


def obtain_supernet(
    cfg: DictConfig, space: SearchSpace, task: Task, supernet_dir: str | None, out: Path
) -> tuple[Supernet, dict[str, Any]]:
    """``(supernet, meta)``: loaded from ``supernet_dir`` (checked against the space and the task
    head), or a finished one in ``out/supernet`` trained with the same settings, or trained now
    into ``out/supernet``. ``meta["train_seconds"]`` is its training time; ``meta["reused_from"]``
    is set when a finished one in ``out/supernet`` was reused."""
    if supernet_dir:
        supernet, meta = load_supernet(supernet_dir)
        if meta["space"] != space.data or supernet.head_spec != task.head():
            raise UsageError(
                f"--supernet {supernet_dir} was trained for another space or task head than "
                f"{space.name} / {task.to_config()} (pass the same --task-override values)"
            )
        return supernet, meta
    directory = out / "supernet"
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)  # as train_supernet records it
    wanted = {"task": task_cfg, "steps": int(cfg.train.max_steps), "seed": int(cfg.seed)}
    meta_file, saved_cfg = directory / "supernet.json", directory / "config.yaml"
    if meta_file.is_file() and saved_cfg.is_file():
        meta = json.loads(meta_file.read_text())
        train = OmegaConf.to_container(OmegaConf.load(saved_cfg).get("train"), resolve=True)
        if train == OmegaConf.to_container(cfg.train, resolve=True) and all(
            _same(meta.get(k), v) for k, v in wanted.items()
        ):
            log(f"reusing the supernet in {directory} ({meta['steps']} steps)")
            supernet, meta = load_supernet(directory)
            return supernet, {**meta, "reused_from": str(directory)}
        log(f"{directory} holds a supernet with other settings: training a new one there")
        (directory / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
    log(
        f"training the supernet of {space.name} on {task.name} ({cfg.train.max_steps} steps) -> {directory}"
    )
    supernet, meta = train_supernet(cfg, space, task, directory)
    return supernet.eval(), meta


def _same(a: Any, b: Any) -> bool:
    norm = lambda x: json.loads(json.dumps(x, default=list))  # noqa: E731 (tuples vs lists)
    return norm(a) == norm(b)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a benchmark's ``main``; user errors end it with one line on stderr and status 2
    (``NAS_TRACEBACK=1`` shows the traceback)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # the benchmarks still check their arguments with ValueError (not yet UsageError)
    except (*USER_ERRORS, ValueError, KeyError) as e:
        if os.environ.get("NAS_TRACEBACK"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
