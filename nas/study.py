"""The Optuna side of the search: samplers, the study, and how one trial is scored.

Two objectives: the task metric of the subnet with inherited weights on the validation split
(direction from the task), and latency relative to the space's baseline (minimised). Trial 0 is
the baseline itself, enqueued through ``SearchSpace.params_of`` so that it is an ordinary trial
the samplers learn from. Every completed trial stores what a report or an export needs in its
user attributes: ``arch`` (``Arch.to_dict()``), ``signature``, ``val_metric``, ``latency_ms``,
``latency_ratio``, ``latency_source``, ``params``, ``flops``, ``worker`` (host:pid); the baseline
also ``reference``; a failed trial ``error``.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy.exc
from hydra.errors import HydraException
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import FrozenTrial, TrialState

from nas.latency import LatencyEstimator
from nas.storage import open_storage
from nas.tasks import Task
from search_spaces import Arch
from search_spaces.config_paths import available, read_config
from supernet.supernet import Supernet


def sampler_names() -> list[str]:
    """Names ``search.sampler`` accepts: ``conf/search_samplers/*.yaml`` and the ``search_samplers/*.yaml`` of
    each ``NAS_CONFIG_PATH`` directory (see ``search_spaces.config_paths``)."""
    return available("search_samplers")


def make_sampler(
    name: str, seed: int, n_trials: int, population_size: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler of ``conf/search_samplers/<name>.yaml`` (or of a ``.yaml`` file ``name``), built with
    ``hydra.utils.instantiate``; ``${seed}`` in it is ``seed``. A ``population_size`` key
    (NSGA-II) is ``population_size`` when given, else the file's value, else sized to the trial
    budget: ``max(4, n_trials // 4)``. A ``ValueError`` starting ``search.sampler`` when the name
    is unknown or the file does not build an Optuna sampler."""
    try:
        data, path = read_config("search_samplers", str(name), "search.sampler: the sampler config")
    except FileNotFoundError:
        raise ValueError(
            f"search.sampler must be one of {', '.join(sampler_names())} (conf/search_samplers/NAME.yaml) "
            f"or a .yaml file, but got {name!r}"
        ) from None
    if not isinstance(data, dict) or "_target_" not in data:
        raise ValueError(
            f"search.sampler={name}: {path} needs `_target_: optuna.samplers.NameSampler`"
        )
    if "population_size" in data:
        given = population_size if population_size is not None else data["population_size"]
        data["population_size"] = given if given is not None else max(4, n_trials // 4)
    try:
        config = OmegaConf.create({"seed": seed, "sampler": data}).sampler
        sampler = instantiate(config, _convert_="all")  # plain lists and dicts for Optuna
    except (HydraException, OmegaConfBaseException) as e:  # bad target, argument or ${...}
        reason = " ".join(str(e).split())
        raise ValueError(f"search.sampler={name}: {path} does not build: {reason}") from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise ValueError(
            f"search.sampler={name}: {path} builds a {type(sampler).__name__}, not an Optuna sampler"
        )
    return sampler


def load_callbacks(
    paths: Sequence[str] | None,
) -> list[Callable[[optuna.Study, FrozenTrial], None]]:
    """The callables ``search.callbacks`` names (dotted paths ``module.function``), each called
    as ``callback(study, trial)`` after every trial, as Optuna's ``study.optimize`` does. A
    ``ValueError`` starting ``search.callbacks`` when a path does not name a callable."""
    if isinstance(paths, str) or not isinstance(paths, Sequence | None):
        raise ValueError(
            f"search.callbacks must be a list of dotted paths `module.function`, got {paths!r}"
        )
    hydra_log = logging.getLogger("hydra.utils")  # get_method logs its error too: one line is ours
    hydra_log.disabled, was = True, hydra_log.disabled
    try:
        callbacks = []
        for path in paths or []:
            if not isinstance(path, str) or "." not in path.strip("."):
                raise ValueError(
                    f"search.callbacks: {path!r} is not a dotted path `module.function`"
                )
            try:
                callbacks.append(get_method(path))
            except (ImportError, ValueError) as e:  # hydra's lookup explains over several lines
                reason = " ".join(str(e).split()).removeprefix(f"Error loading '{path}': ")
                raise ValueError(f"search.callbacks: cannot load {path!r}: {reason}") from None
        return callbacks
    finally:
        hydra_log.disabled = was


def open_study(
    url: str,
    study_name: str,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    attempts: int = 5,
    metric_names: list[str] | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study on the storage ``url`` names, or load it; returns it and whether this
    call created it (exactly one of many workers started together does: the storage's unique
    study name decides). The sampler is passed explicitly in both cases; the two objectives are
    named ``metric_names`` (Optuna's dashboard and plots show them) unless None. Heartbeats: see
    ``nas.storage.open_storage``.

    Workers started together on a fresh storage race to create its tables ("table studies
    already exists", a duplicate schema version row) and to name the objectives (a duplicate
    attribute row); the loser waits a moment and tries again, when the rows are there.
    """

    def create() -> tuple[optuna.Study, bool]:
        storage = open_storage(url, heartbeat_interval, grace_period)
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                directions=[direction, "minimize"],
                sampler=sampler,
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study, created = (
                optuna.load_study(study_name=study_name, storage=storage, sampler=sampler),
                False,
            )
        if metric_names is not None and study.metric_names != list(metric_names):
            with warnings.catch_warnings():  # experimental since Optuna 3.2: not the user's concern
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metric_names))
        return study, created

    for attempt in range(attempts - 1):
        try:
            return create()
        except sqlalchemy.exc.DBAPIError:  # OperationalError, IntegrityError
            time.sleep(0.2 * (attempt + 1))
    return create()  # the last attempt raises what it meets


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed baseline trial, if any."""
    return next((t for t in completed(study) if t.user_attrs.get("reference") == "baseline"), None)


def enqueue_baseline(study: optuna.Study, params: dict[str, Any], created: bool = True) -> None:
    """Enqueue the baseline in a study this worker ``created``; in a study it joined, only when
    no baseline trial is done, waiting or running (another worker's; or a killed one's, which
    heartbeats fail and retry)."""
    states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    if created or not any(
        t.user_attrs.get("reference") == "baseline"
        for t in study.get_trials(deepcopy=False, states=states)
    ):
        study.enqueue_trial(params, user_attrs={"reference": "baseline"})


@dataclass
class Scorer:
    """Scores one architecture: validation metric with inherited (optionally fine-tuned) weights,
    latency relative to the baseline, parameters and FLOPs."""

    supernet: Supernet
    task: Task
    latency: LatencyEstimator
    val_batches: int | None = 8
    finetune: Callable[[Arch], Any] | None = None  # arch -> a fine-tuned model (see search.py)

    def metric(self, arch: Arch, split: str = "val", batches: int | None = None) -> float:
        """The task metric of ``arch`` on ``split`` with the supernet's weights (or fine-tuned)."""
        data = self.task.datamodule()
        data.setup("fit" if split == "val" else "test")
        loader = data.val_dataloader() if split == "val" else data.test_dataloader()
        arch = self.supernet.activate(arch)
        if self.finetune is not None:
            return self.task.evaluate(self.finetune(arch), loader, max_batches=batches)
        self.supernet.recalibrate(arch, itertools.islice(data.train_dataloader(), 4))
        return self.task.evaluate(self.supernet, loader, max_batches=batches)

    def __call__(self, arch: Arch) -> dict[str, Any]:
        arch = self.supernet.activate(arch)
        value = self.metric(arch, "val", self.val_batches)
        record, _ = self.latency(arch)
        return {
            "arch": arch.to_dict(),
            "signature": arch.signature,
            "val_metric": value,
            "latency_ms": record.ms,
            "latency_ratio": record.ratio,
            "latency_source": record.latency_source,
            "params": record.params,
            "flops": record.flops,
        }


@dataclass(frozen=True)
class Budget:
    """``n_trials`` completed trials for the whole study, however many workers share it.

    A trial runs only if the completed trials, plus the running or waiting ones numbered below
    it, leave room; otherwise it is pruned at once and its worker stops. Trial numbers are
    handed out by the storage in order, so with no failures exactly ``n_trials`` complete.
    ``count_running`` is for storages with heartbeats, where a running trial is alive or will
    be failed and retried; without them a dead worker's trial would hold its place forever,
    so only completed trials count (concurrent workers may then overshoot by a trial each)."""

    n_trials: int
    count_running: bool

    def taken(self, trial: optuna.Trial) -> bool:
        states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        held = sum(
            t.state == TrialState.COMPLETE or (self.count_running and t.number < trial.number)
            for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number
        )
        return held >= self.n_trials


def objective(
    scorer: Scorer,
    max_params: float | None = None,
    max_latency_ms: float | None = None,
    budget: Budget | None = None,
) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The Optuna objective: sample an arch through the trial, score it, set constraints. A
    trial that raises records ``error`` (the exception's type and message) before it fails."""
    space, head = scorer.supernet.space, scorer.supernet.head_spec

    def run(trial: optuna.Trial) -> tuple[float, float]:
        if (
            budget is not None
            and trial.user_attrs.get("reference") != "baseline"
            and budget.taken(trial)
        ):
            trial.study.stop()
            raise optuna.TrialPruned("the study's trial budget is taken by other trials")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it
        arch = space.sample(trial, head=head)
        try:
            scores = scorer(arch)
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            raise
        for key, value in scores.items():
            trial.set_user_attr(key, value)
        if max_params is not None:
            trial.set_constraint("params", scores["params"] - max_params)
        if max_latency_ms is not None:
            trial.set_constraint("latency_ms", scores["latency_ms"] - max_latency_ms)
        return scores["val_metric"], scores["latency_ratio"]

    return run


def feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible non-dominated trials, fastest first (one per architecture)."""
    seen, front = set(), []
    for t in sorted(study.best_trials, key=lambda t: (t.values[1], t.number)):
        if feasible(t) and t.user_attrs["signature"] not in seen:
            seen.add(t.user_attrs["signature"])
            front.append(t)
    return front
