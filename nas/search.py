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

import logging
import os
import sys
import time
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
from nas.storage import check_storage, has_heartbeats, masked
from nas.study import (
    Budget,
    Scorer,
    baseline_trial,
    completed,
    enqueue_baseline,
    load_callbacks,
    make_sampler,
    objective,
    open_study,
    pareto_trials,
)
from nas.tasks import Task, get_task
from search_spaces import Arch
from search_spaces.checks import check_int, parse_shape, user_input
from search_spaces.cli import UsageError, compose_config, import_plugins, run_cli, space_from_config
from search_spaces.space import SearchSpace
from supernet.io import load_supernet
from supernet.supernet import Supernet
from supernet.train import check_training, train_supernet


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


def given_supernet(cfg: DictConfig, space: SearchSpace, task: Task) -> Supernet | None:
    """The supernet at ``supernet_path`` (checked before the run folder is made), or None."""
    if not cfg.supernet_path:
        return None
    supernet, meta = load_supernet(cfg.supernet_path)
    if meta["space"] != space.data or supernet.head_spec != task.head():
        raise UsageError(
            f"supernet_path {cfg.supernet_path} was trained for another space or task head"
        )
    return supernet


def obtain_supernet(cfg: DictConfig, space: SearchSpace, task: Task, run: RunDir) -> Supernet:
    """The finished supernet in the run directory, or a newly trained (or resumed) one saved
    there."""
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
            train_model(
                model,
                task,
                max_steps=steps,
                lr=cfg.search.finetune_lr,
                seed=cfg.seed,
                progress=False,
            )
            done[arch.signature] = model
            while len(done) > 4:
                done.popitem(last=False)
        return done[arch.signature]

    return finetune


def _one_line_failures(record: logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
        return False  # Ctrl-C: the command says "interrupted"
    record.exc_info = record.exc_text = None
    return True


def quiet_trial_failures() -> None:
    """Optuna logs a failed trial with its traceback. A trial's error is its result, not a bug
    of the platform: keep Optuna's one-line message (the error is also the trial's ``error``
    attribute, and the report counts failed trials); say nothing for Ctrl-C."""
    logger = logging.getLogger("optuna.study._optimize")
    if _one_line_failures not in logger.filters:
        logger.addFilter(_one_line_failures)


TRIAL_ERRORS = (RuntimeError, ValueError, ArithmeticError)  # NaN loss, out of memory, a bad shape


def optimize(
    study: optuna.Study, scorer: Scorer, cfg: DictConfig, direction: str, heartbeats: bool = False
) -> None:
    """Run trials until the study has ``search.n_trials`` completed ones, counted over every
    worker sharing the study (``nas.study.Budget``), or until ``search.timeout_s``. A trial that
    raises is recorded as failed with its ``error`` and the search goes on. When the rest of the
    budget is held by trials running in other workers, this worker waits for them (a dead
    worker's trial is failed by its stale heartbeat and retried here), so that every worker's
    report sees the whole study."""
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
        finished = completed(study)  # other workers' trials too
        bar.update(len(finished) - bar.n)
        bar.set_postfix(
            front=len(study.best_trials), best=f"{pick(t.values[0] for t in finished):.4f}"
        )
        if log is not None:
            log(
                {
                    "trial": trial.number,
                    **{k: v for k, v in trial.user_attrs.items() if k != "arch"},
                }
            )

    deadline = None if s.timeout_s is None else time.monotonic() + s.timeout_s
    run_trial = objective(scorer, s.max_params, s.max_latency_ms, Budget(s.n_trials, heartbeats))
    held = False  # a trial of this round was pruned: the budget is held by other workers' trials

    def note_held(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal held
        held |= trial.state == TrialState.PRUNED

    stop_at_budget = MaxTrialsCallback(s.n_trials, states=(TrialState.COMPLETE,))
    # search.callbacks run after ours, which have then counted the trial
    user_callbacks = load_callbacks(s.callbacks)
    try:
        while (done := len(completed(study))) < s.n_trials:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            held = False
            study.optimize(
                run_trial,
                n_trials=s.n_trials - done,
                timeout=left,
                catch=TRIAL_ERRORS,
                callbacks=[stop_at_budget, progress, note_held, *user_callbacks],
            )
            if held:
                if not wait_for_other_workers(study, s.n_trials, s.heartbeat_interval, bar):
                    break
            elif len(completed(study)) == done:  # every trial of the round failed
                break
    finally:
        bar.close()


def wait_for_other_workers(study: optuna.Study, n_trials: int, interval: float, bar) -> bool:
    """Wait while other workers' running trials hold the rest of the budget (failing stale ones,
    which the storage retries as waiting trials). True: trials are left to run here."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    while True:
        trials = study.get_trials(deepcopy=False, states=states)
        count = {state: sum(t.state == state for t in trials) for state in states}
        if count[TrialState.COMPLETE] >= n_trials:
            return False
        if count[TrialState.WAITING] or sum(count.values()) < n_trials:
            return True
        if not count[TrialState.RUNNING]:
            return False
        bar.set_postfix_str(f"waiting for {count[TrialState.RUNNING]} trials of other workers")
        time.sleep(interval)
        with warnings.catch_warnings():  # experimental since Optuna 2.9: not the user's concern
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def wandb_logger(cfg: DictConfig, metric: str):
    """``log(dict)`` into an offline wandb run when ``logger=wandb``, else None."""
    if cfg.logger != "wandb":
        return None
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project="nas-search", dir=cfg.run_dir or None, config=_container(cfg))
    return run.log


def report(study: optuna.Study, scorer: Scorer, cfg: DictConfig, run: RunDir) -> SearchResult:
    """Re-evaluate the front and the baseline on the test split; write and print the report."""
    task, batches = scorer.task, cfg.report.test_batches
    base = baseline_trial(study)
    if base is None:
        running = any(
            t.user_attrs.get("reference") == "baseline"
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )
        raise UsageError(
            "the study has no completed baseline trial; "
            + (
                "its trial is still running (on a storage without heartbeats a dead worker's trial stays so)"
                if running
                else "rerun to evaluate it"
            )
        )

    def test_metric(trial) -> float:
        return scorer.metric(Arch.from_dict(trial.user_attrs["arch"]), "test", batches)

    def verified(trial) -> dict | None:  # a reported latency is always a measured one
        if trial.user_attrs["latency_source"] == "measured":
            return None
        record, _ = scorer.latency.verify(Arch.from_dict(trial.user_attrs["arch"]))
        return {
            "latency_ms": record.ms,
            "latency_ratio": record.ratio,
            "latency_source": record.latency_source,
        }

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
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        shown = "; ".join(
            f"{t.number}: {t.user_attrs.get('error', 'died or returned NaN')}" for t in failed[:3]
        )
        print(
            f"{len(failed)} trials failed and were skipped (trial {shown}{'; ...' if len(failed) > 3 else ''})"
        )
    print(f"results in {run.path}/ (pareto.csv, pareto/, pareto.png, pareto.html, run.json)")
    print(
        "scores use shared weights: on charlm they tell token-mixer types apart better than archs "
        "of one type (README, 'The default task and budget'); train the members you consider from "
        f"scratch before choosing: python -m nas.export run={run.path} trials=pareto "
        "retrain=true finetune_steps=400 out=DIR"
    )
    return SearchResult(study, front, baseline, run.path)


def validate(cfg: DictConfig, task: Task) -> None:
    """Every search setting checked before any work (a supernet trains for minutes)."""
    s, lat = cfg.search, cfg.latency
    if s.latency not in MODES:
        raise UsageError(f"search.latency must be one of {', '.join(MODES)}, got {s.latency!r}")
    check_int("search.n_trials", s.n_trials)
    check_int("search.val_batches", s.val_batches, optional=True)
    check_int("search.population_size", s.population_size, optional=True)
    with user_input("search.sampler"):  # an unknown name, or a sampler file that does not build
        make_sampler(s.sampler, cfg.seed, s.n_trials, s.population_size)
    check_int("latency.threads", lat.threads)
    check_int("latency.repeats", lat.repeats)
    if s.timeout_s is not None and (
        isinstance(s.timeout_s, bool)
        or not isinstance(s.timeout_s, int | float)
        or s.timeout_s <= 0
    ):
        raise UsageError(
            f"search.timeout_s must be a positive number of seconds or null, got {s.timeout_s!r}"
        )
    if lat.device not in ("cpu", "cuda"):
        raise UsageError(f"latency.device must be cpu or cuda, got {lat.device!r}")
    parse_shape("latency.shape", lat.shape, length=len(task.latency_shape), optional=True)
    check_int("search.heartbeat_interval", s.heartbeat_interval, optional=True)
    check_int("search.grace_period", s.grace_period, optional=True)
    with user_input("search.callbacks"):
        load_callbacks(s.callbacks)
    if s.storage:
        check_storage(s.storage)
    if not cfg.supernet_path:
        check_training(cfg)


def run_search(cfg: DictConfig) -> SearchResult:
    """Run (or resume) the search a composed ``conf/search.yaml`` config describes."""
    import_plugins(cfg)
    space = space_from_config(cfg)
    with user_input("task"):
        task = get_task(cfg.task)
    validate(cfg, task)
    given = given_supernet(cfg, space, task)
    s = cfg.search
    head = task.head()
    shape = tuple(cfg.latency.shape or task.latency_shape)
    run = RunDir(cfg.run_dir or f"runs/{space.name}-{task.name}")
    resuming = run.claim(identity(cfg, space, task, shape))
    print(f"{'resuming' if resuming else 'starting'} search in {run.path}", flush=True)

    supernet = given or obtain_supernet(cfg, space, task, run)
    storage = s.storage or f"sqlite:///{run.study_db.resolve()}"
    study_name = s.study_name or f"{space.name}-{task.name}"
    fingerprint = device_fingerprint(cfg.latency.device, cfg.latency.threads)
    run.update(
        space=space.name,
        task=task.to_config(),
        metric=task.metric_name,
        direction=task.direction,
        latency_shape=list(shape),
        supernet=str(cfg.supernet_path) if cfg.supernet_path else "supernet",
        storage=masked(storage),
        study_name=study_name,
        seed=cfg.seed,
        device=fingerprint.to_dict(),
        git_commit=git_commit(),
        versions=versions(),
    )
    OmegaConf.save(cfg, run.path / "config.yaml")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_trial_failures()
    sampler = make_sampler(s.sampler, cfg.seed, s.n_trials, s.population_size)
    names = [f"val {task.metric_name}", "latency / baseline"]
    study, created = open_study(
        storage,
        study_name,
        task.direction,
        sampler,
        metric_names=names,
        heartbeat_interval=s.heartbeat_interval,
        grace_period=s.grace_period,
    )
    if not created:  # a worker joining (or resuming) a study must not propose in lock-step
        study.sampler = make_sampler(
            s.sampler, cfg.seed + os.getpid(), s.n_trials, s.population_size
        )
    if created or not study.user_attrs.get("run_dir"):  # how `nas.export storage=` finds a run
        study.set_user_attr("run_dir", str(run.path.resolve()))
    heartbeats = has_heartbeats(storage, s.heartbeat_interval)
    enqueue_baseline(study, space.params_of(space.baseline(head)), created)
    estimator = LatencyEstimator.for_space(
        space,
        shape,
        head=head,
        directory=cfg.latency.cache_dir,
        mode=s.latency,
        device=cfg.latency.device,
        threads=cfg.latency.threads,
        repeats=cfg.latency.repeats,
        min_run_time=cfg.latency.min_run_time,
    )
    scorer = Scorer(
        supernet.eval(), task, estimator, s.val_batches, make_finetune(cfg, supernet, task)
    )
    optimize(study, scorer, cfg, task.direction, heartbeats)
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
