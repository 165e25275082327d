"""``python -m nas.export run=RUN_DIR [trials=pareto|best|fastest|[3,7]] [finetune_steps=K]
[retrain=true] out=DIR`` (or ``storage=URL study_name=S``)

Turns chosen trials of a search into standalone models. For each trial, ``DIR/trial_<N>/``
holds ``arch.yaml`` + ``model.safetensors`` (``search_spaces.load_exported`` reloads them without
``supernet`` or ``nas``), ``model.pt2`` (torch.export, plain PyTorch), ``model.onnx`` (checked
with onnxruntime), ``reference.safetensors`` (an input and its outputs), the task's own files,
``export.json`` (every number) and ``README.md`` (the model card). Weights are inherited from the
supernet, optionally fine-tuned ``K`` steps, or trained from scratch (``retrain=true``).

Everything is written into a temporary folder beside ``DIR`` and renamed into place at the end,
so a failed export leaves nothing behind and never replaces an existing folder.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from common.atomic import atomic_dir
from common.device import check_device
from common.export_folder import check_out, write_record, write_reference
from nas.latency import measure
from nas.model_card import model_card
from nas.portable import write_portable
from nas.study import pareto_trials
from nas.tasks import get_task
from nas.train_arch import init_model, train_model
from search_spaces import Arch, save_exported
from search_spaces.checks import check_int, check_number, parse_shape, user_input
from search_spaces.cli import UsageError, import_plugins, run_cli
from supernet.io import load_supernet

RUN_FILE, PARETO_FILE = "run.json", "pareto.csv"
SELECTIONS = ("pareto", "best", "fastest")


def load_run(cfg: DictConfig) -> tuple[Path | None, dict[str, Any], optuna.Study]:
    """The run directory (if known), its ``run.json`` and the study, from ``run=`` or from
    ``storage=`` + ``study_name=`` (whose study names its run in the user attribute ``run_dir``)."""
    if cfg.run:
        run_dir = Path(cfg.run)
        if not (run_dir / RUN_FILE).is_file():
            raise UsageError(f"run={cfg.run}: no {RUN_FILE} there (not a search run directory)")
        run = read_run(run_dir / RUN_FILE)
        storage, name = cfg.storage or run.get("storage"), cfg.study_name or run.get("study_name")
        if storage and storage.startswith("sqlite:///") and not Path(storage[10:]).exists():
            if (run_dir / "study.db").is_file():  # the run directory was moved or copied
                storage = f"sqlite:///{(run_dir / 'study.db').resolve()}"
        return run_dir, run, _load_study(storage, name)
    if not (cfg.storage and cfg.study_name):
        raise UsageError("give run=RUN_DIR, or storage=URL and study_name=NAME")
    study = _load_study(cfg.storage, cfg.study_name)
    if study.user_attrs.get("run_dir"):
        run_dir = Path(study.user_attrs["run_dir"])
        if not (run_dir / RUN_FILE).is_file():
            raise UsageError(
                f"study {cfg.study_name!r} names run_dir={run_dir}, which has no {RUN_FILE}"
            )
        return run_dir, read_run(run_dir / RUN_FILE), study
    if isinstance(study.user_attrs.get("run"), dict):
        return None, study.user_attrs["run"], study
    raise UsageError(
        f"study {cfg.study_name!r} records no run (user attribute `run_dir`); use run=RUN_DIR"
    )


def read_run(path: Path) -> dict[str, Any]:
    """A run's ``run.json``: a mapping (``UsageError`` naming the file otherwise)."""
    with user_input(str(path)):
        run = json.loads(path.read_text())
    if not isinstance(run, dict):
        raise UsageError(f"{path}: expected a JSON mapping, got {type(run).__name__}")
    return run


def _load_study(storage: str | None, name: str | None) -> optuna.Study:
    """The study ``name`` in ``storage``; a SQLite file must exist (Optuna would create it)."""
    import sqlalchemy.exc

    if not storage or not name:
        raise UsageError(f"the run names no study (storage={storage!r}, study_name={name!r})")
    if storage.startswith("sqlite:///") and not Path(storage[10:]).is_file():
        raise UsageError(f"storage {storage}: no such SQLite file")
    try:
        return optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UsageError(
            f"no study {name!r} in {storage}; studies there: {', '.join(names) or 'none'}"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise UsageError(
            f"storage {storage}: cannot be read as an Optuna study ({reason})"
        ) from None


def choose_trials(
    study: optuna.Study, selection: str | int | Sequence[int], direction: str = "maximize"
) -> list[optuna.trial.FrozenTrial]:
    """The trials ``selection`` names: ``pareto`` (the front of ``nas.study.pareto_trials``, the
    one the search's ``pareto.csv`` lists: feasible, one trial per architecture; by number),
    ``best`` (best ``values[0]`` on the front in ``direction``), ``fastest`` (lowest
    ``values[1]``, the latency ratio, on the front) or trial numbers (completed trials only)."""
    if isinstance(selection, str) and selection in SELECTIONS:
        front = sorted(pareto_trials(study), key=lambda t: t.number)
        if not front:
            raise UsageError(
                f"study {study.study_name!r} has no Pareto front (no completed trial meets its constraints)"
            )
        if selection == "best":
            pick = max if direction == "maximize" else min
            return [pick(front, key=lambda t: t.values[0])]
        if selection == "fastest":
            return [min(front, key=lambda t: t.values[1])]
        return front
    numbers = [selection] if isinstance(selection, int) else selection
    if isinstance(numbers, str) or not all(isinstance(n, int) for n in numbers):
        raise UsageError(
            f"trials must be pareto, best, fastest or a list of trial numbers, got {selection!r}"
        )
    done = {
        t.number: t
        for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    }
    unknown = [n for n in numbers if n not in done]
    if unknown:
        raise UsageError(
            f"trials: no completed trial {unknown[0]} in study {study.study_name!r}; valid: {', '.join(map(str, sorted(done)))}"
        )
    return [done[n] for n in dict.fromkeys(numbers)]


def pareto_rows(run_dir: Path | None) -> dict[int, dict[str, str]] | None:
    """``pareto.csv`` rows by trial number, values as the strings in the file (None: no file)."""
    path = run_dir / PARETO_FILE if run_dir else None
    if path is None or not path.is_file():
        return None
    with path.open(newline="") as f, user_input(str(path)):
        return {int(row["trial"]): row for row in csv.DictReader(f)}


def search_row(
    rows: dict[int, dict[str, str]] | None, trial: optuna.trial.FrozenTrial
) -> dict[str, str] | None:
    """The ``pareto.csv`` row of ``trial``, or else of the trial that stands for its architecture
    on the front (the front keeps one trial per architecture: a repeat has no row of its own)."""
    rows = rows or {}
    signature = trial.user_attrs.get("signature")
    same = (r for r in rows.values() if signature is not None and r.get("signature") == signature)
    return rows.get(trial.number) or next(same, None)


def _seeded_input(task, shape: Sequence[int], seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.example_input(tuple(shape))


def export_trial(
    trial: optuna.trial.FrozenTrial, dest: Path, ctx: dict[str, Any]
) -> dict[str, Any]:
    """Write ``dest`` for one trial (see the module doc) and return its export record."""
    cfg, task, run = ctx["cfg"], ctx["task"], ctx["run"]
    if "arch" not in trial.user_attrs:
        raise UsageError(f"trial {trial.number} has no user attribute `arch`")
    try:
        arch = Arch.from_dict(trial.user_attrs["arch"])
    except ValueError as e:
        raise UsageError(f"trial {trial.number}: invalid `arch` user attribute: {e}") from None
    k = int(cfg.finetune_steps)
    if cfg.retrain:
        model = init_model(arch, cfg.seed)
        weights = f"trained from scratch for {k} steps (seed {cfg.seed}, lr {cfg.train.lr})"
    else:
        model = ctx["supernet"].extract(arch)
        weights = "inherited from the supernet" + (
            f", fine-tuned {k} steps (seed {cfg.seed}, lr {cfg.train.lr})" if k else ""
        )
    dest.mkdir(parents=True)
    training = None
    if k > 0:
        t = cfg.train
        training = train_model(
            model,
            task,
            max_steps=k,
            lr=t.lr,
            weight_decay=t.weight_decay,
            warmup_steps=t.warmup_steps,
            batch_size=t.batch_size,
            seed=cfg.seed,
            progress=cfg.progress,
            val_every=t.val_every,
            out=dest if t.val_every else None,
            **OmegaConf.to_container(cfg.trainer, resolve=True),
        )
    model = model.cpu().eval()
    data = task.datamodule()
    data.setup("fit")
    data.setup("test")
    after = {
        "val_metric": task.evaluate(model, data.val_dataloader(), max_batches=cfg.eval_batches),
        "test_metric": task.evaluate(model, data.test_dataloader(), max_batches=cfg.eval_batches),
    }
    save_exported(model, dest)
    if callable(getattr(task, "export_files", None)):
        task.export_files(dest)  # what the task needs to be used, e.g. a vocabulary

    onnx_shape = list(cfg.onnx.shape or ctx["latency_shape"])
    example = _seeded_input(task, onnx_shape, cfg.seed)
    portable = write_portable(model, example, dest, dynamic=cfg.onnx.dynamic)
    write_reference(dest, lambda inputs: model(inputs), {"inputs": example})

    lat_shape = list(cfg.latency.shape or ctx["latency_shape"])
    lat = measure(
        model,
        _seeded_input(task, lat_shape, cfg.seed),
        cfg.latency.device,
        threads=cfg.latency.threads,
        min_run_time=cfg.latency.min_run_time,
        min_runs=cfg.latency.min_runs,
    )
    model.cpu()
    tokens = lat_shape[1] if len(lat_shape) == 2 else arch.max_len
    info = {
        "trial": trial.number,
        "space": run.get("space", "?"),
        "task": task.to_config(),
        "metric": task.metric_name,
        "direction": task.direction,
        "arch": arch.to_dict(),
        "signature": arch.signature,
        "weights": weights,
        "training": training,
        "after": after,
        "search_row": search_row(ctx["rows"], trial),
        "pareto_csv": ctx["rows"] is not None,
        "search_attrs": {k: v for k, v in trial.user_attrs.items() if k != "arch"},
        "search_values": list(trial.values or []),
        "latency": {
            **lat.to_dict(),
            "device": lat.fingerprint.device,
            "fingerprint_key": lat.fingerprint.key,
            "fingerprint": str(lat.fingerprint),
        },
        "params": model.num_params(),
        "flops": model.flops(tokens),
        "flops_tokens": tokens,
        "portable": portable.to_dict(),
        "study_name": ctx["study"].study_name,
        "storage": ctx["storage"],
        "supernet": str(ctx["supernet_dir"]),
        "run_dir": str(ctx["run_dir"]) if ctx["run_dir"] else None,
        "git_commit": run.get("git_commit"),
        "command": ctx["command"],
        "plugins": arch.plugin_modules,
    }
    return write_record(dest, info, model_card)


def check_settings(cfg: DictConfig) -> Path:
    """Every setting, checked before the run is read (a bad one would otherwise fail after the
    trials are trained and exported); returns the export folder."""
    out = check_out(
        cfg.out,
        overwrite=cfg.overwrite,
        source=cfg.run,
        source_name="search run folder",
        error=UsageError,
    )
    check_int("finetune_steps", cfg.finetune_steps, minimum=0)
    if cfg.retrain and cfg.finetune_steps == 0:
        raise UsageError(
            "retrain=true trains from scratch for finetune_steps steps: set finetune_steps=K > 0"
        )
    check_int("eval_batches", cfg.eval_batches, optional=True)
    lat, t = cfg.latency, cfg.train
    with user_input("latency.device"):
        check_device(lat.device)
    check_int("latency.threads", lat.threads, optional=True)
    check_int("latency.min_runs", lat.min_runs)
    check_number("latency.min_run_time", lat.min_run_time, above=0)
    check_number("train.lr", t.lr, above=0)
    check_number("train.weight_decay", t.weight_decay, at_least=0)
    check_int("train.warmup_steps", t.warmup_steps, minimum=0)
    check_int("train.batch_size", t.batch_size, optional=True)
    check_int("train.val_every", t.val_every, optional=True)
    return out


def check_shapes(cfg: DictConfig, latency_shape: Sequence[int]) -> None:
    """``onnx.shape`` and ``latency.shape``: null, or inputs of the task's rank."""
    for name, value in (("onnx.shape", cfg.onnx.shape), ("latency.shape", cfg.latency.shape)):
        parse_shape(name, value, length=len(latency_shape), optional=True)


def export(cfg: DictConfig, argv: Sequence[str] = ()) -> int:
    import_plugins(cfg)
    out = check_settings(cfg)
    run_dir, run, study = load_run(cfg)
    trials_sel = cfg.trials
    if isinstance(trials_sel, ListConfig):
        trials_sel = OmegaConf.to_container(trials_sel)
    trials = choose_trials(study, trials_sel, run.get("direction", "maximize"))
    with user_input(f"{run_dir / RUN_FILE if run_dir else 'the study'}: task"):
        task = get_task(run["task"])
    latency_shape = run.get("latency_shape") or list(task.latency_shape)
    check_shapes(cfg, latency_shape)
    supernet_dir = Path(run.get("supernet", "supernet"))
    if not supernet_dir.is_absolute() and run_dir is not None:
        supernet_dir = run_dir / supernet_dir
    supernet = None if cfg.retrain else load_supernet(supernet_dir)[0]
    ctx = {
        "cfg": cfg,
        "task": task,
        "run": run,
        "run_dir": run_dir,
        "study": study,
        "supernet": supernet,
        "supernet_dir": supernet_dir,
        "storage": cfg.storage or run.get("storage"),
        "rows": pareto_rows(run_dir),
        "latency_shape": latency_shape,
        "command": " ".join(["python -m nas.export", *argv]),
    }
    with atomic_dir(out) as tmp:
        infos = [
            export_trial(t, tmp / f"trial_{t.number}", ctx)
            for t in tqdm(trials, desc="export", unit="trial", disable=not cfg.progress)
        ]
        OmegaConf.save(cfg, tmp / "config.yaml")
        write_summary(tmp / "summary.csv", infos)
    print(f"exported {len(infos)} trial(s) to {out}")
    return 0


def write_summary(path: Path, infos: list[dict[str, Any]]) -> None:
    """One row per exported trial; also printed."""
    cols = [
        "trial",
        "signature",
        "val_metric",
        "test_metric",
        "latency_ms",
        "params",
        "flops",
        "onnx_max_abs_diff",
        "dynamic_axes",
    ]
    rows = [
        [
            i["trial"],
            i["signature"],
            f"{i['after']['val_metric']:.4f}",
            f"{i['after']['test_metric']:.4f}",
            f"{i['latency']['median_ms']:.4g}",
            i["params"],
            i["flops"],
            f"{i['portable']['onnx_max_abs_diff']:.2g}",
            "/".join(i["portable"]["dynamic_axes"].values()) or "-",
        ]
        for i in infos
    ]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([cols, *rows])
    for row in [cols, *rows]:
        print("  ".join(f"{str(v):>12}" for v in row))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda cfg: export(cfg, argv), "export", argv)


if __name__ == "__main__":
    sys.exit(main())
