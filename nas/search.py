"""``python -m nas.search +space=NAME [task=NAME] [preset=quick|full] [search.*=...]``

The platform's main job. Trains (or reuses) the supernet of a space on a task, runs a
two-objective Optuna study (validation metric with inherited weights, measured latency relative
to the space's baseline), re-evaluates the Pareto front and the baseline on the test split and
prints it. Everything lands in the run directory (``runs/<space>-<task>/`` by default): the
supernet, the study storage, ``pareto.csv``, ``pareto/trial_N/arch.yaml``, ``pareto.png``,
``pareto.html``, ``run.json`` and ``config.yaml``. The same command resumes. ``run_search(cfg)``
is the Python API.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from omegaconf import DictConfig, OmegaConf
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from tqdm.auto import tqdm

from nas.latency import LatencyEstimator, device_fingerprint
from nas.latency.cache import MODES
from nas.plots import write_plots
from nas.report import ParetoMember, format_table, member, write_archs, write_csv
from nas.run_dir import RunDir, git_commit, versions
from nas.study import (
    SAMPLERS,
    Scorer,
    baseline_trial,
    completed,
    enqueue_baseline,
    make_sampler,
    objective,
    open_study,
    pareto_trials,
)
from nas.tasks import Task, get_task
from search_spaces import Arch
from search_spaces.cli import UsageError, compose_config, import_plugins, run_cli, space_from_config
from search_spaces.space import SearchSpace
from supernet.io import load_supernet
from supernet.supernet import Supernet
from supernet.train import train_supernet


@dataclass
class SearchResult:
    """What ``run_search`` returns: the study, the reported front (fastest first), the baseline
    row, and the run directory."""

    study: optuna.Study
    pareto: list[ParetoMember]
    baseline: ParetoMember
    run_dir: Path


def _container(node) -> object:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def identity(cfg: DictConfig, space: SearchSpace, task: Task, shape: tuple) -> dict:
    """What a run directory's study depends on (see ``nas.run_dir``); budgets are not part of
    it, so a rerun with more trials continues the same study."""
    s = cfg.search
    return {
        "space": space.data,
        "task": task.to_config(),
        "objective": {
            "metric": task.metric_name,
            "direction": task.direction,
            "latency_shape": list(shape),
            "latency_device": cfg.latency.device,
            "latency_mode": s.latency,
            "val_batches": s.val_batches,
            "finetune_steps": s.finetune_steps,
            "finetune_lr": s.finetune_lr if s.finetune_steps else None,
        },
        "supernet": str(cfg.supernet_path) if cfg.supernet_path else _container(cfg.train),
        "seed": cfg.seed,
    }


def obtain_supernet(cfg: DictConfig, space: SearchSpace, task: Task, run: RunDir) -> Supernet:
    """The supernet at ``supernet_path``, the finished one in the run directory, or a newly
    trained (or resumed) one saved there."""
    if cfg.supernet_path:
        supernet, meta = load_supernet(cfg.supernet_path)
        if meta["space"] != space.data or supernet.head_spec != task.head():
            raise UsageError(
                f"supernet_path {cfg.supernet_path} was trained for another space or task head"
            )
        return supernet
    meta_file = run.supernet / "supernet.json"
    if meta_file.is_file():
        supernet, meta = load_supernet(run.supernet)
        if meta.get("steps", 0) >= cfg.train.max_steps:
            print(f"reusing the supernet in {run.supernet} ({meta['steps']} steps)", flush=True)
            return supernet
    print(f"training the supernet of {space.name} on {task.name} -> {run.supernet}", flush=True)
    supernet, _ = train_supernet(cfg, space, task, run.supernet)
    return supernet


def make_finetune(cfg: DictConfig, supernet: Supernet, task: Task):
    """``arch -> model`` fine-tuned ``search.finetune_steps`` steps from inherited weights
    (memoised per architecture: validation and test scoring share it), or None."""
    steps = cfg.search.finetune_steps
    if not steps:
        return None
    from nas.train_arch import train_model

    done: OrderedDict[str, torch.nn.Module] = OrderedDict()

    def finetune(arch: Arch) -> torch.nn.Module:
        if arch.signature not in done:
            model = supernet.extract(arch)
            train_model(model, task, max_steps=steps, lr=cfg.search.finetune_lr, seed=cfg.seed,
                        progress=False)  # fmt: skip
            done[arch.signature] = model
            while len(done) > 4:
                done.popitem(last=False)
        return done[arch.signature]

    return finetune


def _masked(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def optimize(study: optuna.Study, scorer: Scorer, cfg: DictConfig, direction: str) -> None:
    """Run trials until the study has ``search.n_trials`` completed ones (or the timeout)."""
    s = cfg.search
    done = len(completed(study))
    if done >= s.n_trials:
        print(f"the study already has {done} of {s.n_trials} trials", flush=True)
        return
    log = wandb_logger(cfg, scorer.task.metric_name)
    pick = max if direction == "maximize" else min
    bar = tqdm(total=s.n_trials, initial=done, desc="search trials", unit="trial")

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        bar.update(1)
        best = pick(t.values[0] for t in completed(study))
        bar.set_postfix(front=len(study.best_trials), best=f"{best:.4f}")
        if log is not None:
            log(
                {
                    "trial": trial.number,
                    **{k: v for k, v in trial.user_attrs.items() if k != "arch"},
                }
            )

    try:
        study.optimize(
            objective(scorer, s.max_params, s.max_latency_ms),
            n_trials=s.n_trials - done,
            timeout=s.timeout_s,
            callbacks=[MaxTrialsCallback(s.n_trials, states=(TrialState.COMPLETE,)), progress],
        )
    finally:
        bar.close()


def wandb_logger(cfg: DictConfig, metric: str):
    """``log(dict)`` into an offline wandb run when ``logger=wandb``, else None."""
    if cfg.logger != "wandb":
        return None
    import os

    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project="nas-search", dir=cfg.run_dir or None, config=_container(cfg))
    return run.log


def report(study: optuna.Study, scorer: Scorer, cfg: DictConfig, run: RunDir) -> SearchResult:
    """Re-evaluate the front and the baseline on the test split; write and print the report."""
    task, batches = scorer.task, cfg.report.test_batches
    base = baseline_trial(study)
    if base is None:
        raise UsageError("the study has no completed baseline trial; rerun to evaluate it")

    def test_metric(trial) -> float:
        return scorer.metric(Arch.from_dict(trial.user_attrs["arch"]), "test", batches)

    def verified(trial) -> dict | None:  # a reported latency is always a measured one
        if trial.user_attrs["latency_source"] == "measured":
            return None
        record, _ = scorer.latency.verify(Arch.from_dict(trial.user_attrs["arch"]))
        return {"latency_ms": record.ms, "latency_ratio": record.ratio,
                "latency_source": record.latency_source}  # fmt: skip

    print("re-evaluating the Pareto front and the baseline on the test split", flush=True)
    baseline = member(base, test_metric(base), None, task.direction, verified(base))
    front = [
        member(t, test_metric(t), baseline, task.direction, verified(t))
        for t in tqdm(pareto_trials(study), desc="test split", unit="arch", leave=False)
    ]
    study.set_user_attr("test_metrics", {str(m.trial): m.test_metric for m in [*front, baseline]})
    write_csv(run.path / "pareto.csv", front)
    write_archs(run.path / "pareto", front)
    if cfg.report.plots:
        write_plots(study, run.path, task.metric_name, task.direction, front, baseline)
    print(format_table(front, baseline, task.metric_name, task.direction))
    print(f"results in {run.path}/ (pareto.csv, pareto/, pareto.png, pareto.html, run.json)")
    return SearchResult(study, front, baseline, run.path)


def _positive_int(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer{' or null' if optional else ''}, got {value!r}")  # fmt: skip


def check_storage(url: str) -> None:
    """A storage URL Optuna can open: a known SQLAlchemy dialect whose driver is installed and,
    for SQLite, an existing folder (checked before any training, so nothing is lost)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
        raise UsageError(f"search.storage {_masked(url)!r} is not a usable database URL: {e}") from None  # fmt: skip
    except ImportError as e:
        raise UsageError(f"search.storage {_masked(url)!r}: its database driver is not installed ({e})") from None  # fmt: skip
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise UsageError(f"search.storage {url!r}: the folder {folder} does not exist")


def validate(cfg: DictConfig) -> None:
    """Every search setting checked before any work (a supernet trains for minutes)."""
    s, lat = cfg.search, cfg.latency
    if s.sampler not in SAMPLERS:
        raise UsageError(f"search.sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
    if s.latency not in MODES:
        raise UsageError(f"search.latency must be one of {', '.join(MODES)}, got {s.latency!r}")
    _positive_int("search.n_trials", s.n_trials)
    _positive_int("search.val_batches", s.val_batches, optional=True)
    _positive_int("search.population_size", s.population_size, optional=True)
    _positive_int("latency.threads", lat.threads)
    _positive_int("latency.repeats", lat.repeats)
    if s.timeout_s is not None and (isinstance(s.timeout_s, bool) or not isinstance(s.timeout_s, int | float) or s.timeout_s <= 0):  # fmt: skip
        raise UsageError(f"search.timeout_s must be a positive number of seconds or null, got {s.timeout_s!r}")  # fmt: skip
    if lat.device not in ("cpu", "cuda"):
        raise UsageError(f"latency.device must be cpu or cuda, got {lat.device!r}")
    shape = lat.shape
    if shape is not None and (len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape)):  # fmt: skip
        raise UsageError(f"latency.shape must be [batch, length] of positive integers or null, got {list(shape)!r}")  # fmt: skip
    if s.storage:
        check_storage(s.storage)


def run_search(cfg: DictConfig) -> SearchResult:
    """Run (or resume) the search a composed ``conf/search.yaml`` config describes."""
    import_plugins(cfg)
    space = space_from_config(cfg)
    try:
        task = get_task(cfg.task)
    except ValueError as e:
        raise UsageError(f"task: {e}") from None
    validate(cfg)
    s = cfg.search
    head = task.head()
    shape = tuple(cfg.latency.shape or task.latency_shape)
    run = RunDir(cfg.run_dir or f"runs/{space.name}-{task.name}")
    resuming = run.claim(identity(cfg, space, task, shape))
    print(f"{'resuming' if resuming else 'starting'} search in {run.path}", flush=True)

    supernet = obtain_supernet(cfg, space, task, run)
    storage = s.storage or f"sqlite:///{run.study_db.resolve()}"
    study_name = s.study_name or f"{space.name}-{task.name}"
    fingerprint = device_fingerprint(cfg.latency.device, cfg.latency.threads)
    run.update(
        space=space.name, task=task.to_config(), metric=task.metric_name,
        direction=task.direction, latency_shape=list(shape),
        supernet=str(cfg.supernet_path) if cfg.supernet_path else "supernet",
        storage=_masked(storage), study_name=study_name, seed=cfg.seed,
        device=fingerprint.to_dict(), git_commit=git_commit(), versions=versions(),
    )  # fmt: skip
    OmegaConf.save(cfg, run.path / "config.yaml")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(s.sampler, cfg.seed, s.n_trials, s.population_size)
    names = [f"val {task.metric_name}", "latency / baseline"]
    study = open_study(storage, study_name, task.direction, sampler, metric_names=names)
    study.set_user_attr("run_dir", str(run.path.resolve()))  # how `nas.export storage=` finds it
    enqueue_baseline(study, space.params_of(space.baseline(head)))
    estimator = LatencyEstimator.for_space(
        space, shape, head=head, directory=cfg.latency.cache_dir, mode=s.latency,
        device=cfg.latency.device, threads=cfg.latency.threads, repeats=cfg.latency.repeats,
        min_run_time=cfg.latency.min_run_time,
    )  # fmt: skip
    scorer = Scorer(supernet.eval(), task, estimator, s.val_batches,
                    make_finetune(cfg, supernet, task))  # fmt: skip
    optimize(study, scorer, cfg, task.direction)
    return report(study, scorer, cfg, run)


def main(argv: list[str] | None = None) -> int:
    torch.set_float32_matmul_precision("high")
    # "an experimental feature" notices (TPE's `group`, ...) are for developers, not users
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return run_cli(lambda cfg: run_search(cfg) and 0, "search", argv)


def compose(overrides: list[str]) -> DictConfig:
    """The search config for ``overrides`` (as on the command line), for ``run_search``."""
    return compose_config("search", overrides)


if __name__ == "__main__":
    sys.exit(main())
