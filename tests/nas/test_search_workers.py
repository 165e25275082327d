"""Several ``python -m nas.search`` workers on one study: on a real PostgreSQL server (exact
trial budget, no trial lost or duplicated, baseline once, one shared supernet, every worker's
front equal to the storage's), a worker killed with SIGKILL mid-trial (its trial failed by its
stale heartbeat and retried by another worker), and a journal file on one machine."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.storage import open_storage
from nas.study import pareto_trials
from nas.train_supernet import main as train_supernet

TINY = [
    "+space=efficient_attn",
    "task=mqar",
    "train.max_steps=2",
    "train.teacher_steps=1",
    "train.val_every=1",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=0",
    "task.num_train=32",
    "task.num_val=16",
    "task.num_test=16",
]
SEARCH = ["report.plots=false", "search.val_batches=1", "latency.shape=[1,32]", "latency.repeats=1"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory) -> Path:
    """One supernet, trained once, that every worker loads (``supernet_path``)."""
    out = tmp_path_factory.mktemp("shared") / "supernet"
    assert train_supernet([*TINY, f"out={out}"]) == 0
    return out


def start_worker(
    tmp_path: Path, name: str, supernet: Path, storage: str, *extra: str, cache: str = "latency"
):
    """A worker process; workers share the latency cache unless given their own ``cache``."""
    argv = [
        *TINY,
        *SEARCH,
        f"supernet_path={supernet}",
        f"search.storage={storage}",
        "search.study_name=shared",
        f"run_dir={tmp_path / name}",
        f"latency.cache_dir={tmp_path / cache}",
        *extra,
    ]
    log = (tmp_path / f"{name}.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.search", *argv], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    proc.log_path = tmp_path / f"{name}.log"
    return proc


def finish(proc, timeout: float = 400) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, proc.log_path.read_text()[-3000:]


def trials(storage: str, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    return study.get_trials(deepcopy=False, states=states or None)


def overlapping_duplicates(done: list[optuna.trial.FrozenTrial]) -> list[tuple[int, int]]:
    """Pairs of trials with the same parameters that ran at the same time: what workers
    proposing in lock-step would produce (a sampler alone never runs two trials at once)."""
    return [
        (a.number, b.number)
        for a in done
        for b in done
        if a.number < b.number
        and a.params == b.params
        and a.datetime_start < b.datetime_complete
        and b.datetime_start < a.datetime_complete
    ]


@pytest.mark.postgres
def test_three_workers_share_one_study_on_postgresql(tmp_path, postgres, supernet_dir) -> None:
    url, n = postgres.new_database(), 12
    workers = [
        start_worker(tmp_path, f"w{i}", supernet_dir, url, f"search.n_trials={n}") for i in range(3)
    ]
    for proc in workers:
        finish(proc)
    done = trials(url, TrialState.COMPLETE)
    assert len(done) == n  # the budget is the study's, however many workers share it
    assert sum(t.user_attrs.get("reference") == "baseline" for t in done) == 1
    assert overlapping_duplicates(done) == []
    assert not trials(url, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    front = [t.number for t in pareto_trials(study)]
    for i in range(3):  # each worker waited for the others: its front is the whole study's
        run = tmp_path / f"w{i}"
        rows = list(csv.DictReader((run / "pareto.csv").open()))
        assert [int(r["trial"]) for r in rows] == front
        assert not (run / "supernet").exists()  # loaded from supernet_path, never retrained
    assert sum("search trials" in p.log_path.read_text() for p in workers) == 3


def wait_for(condition, proc, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if condition():
                return
        except (KeyError, ValueError, optuna.exceptions.OptunaError):  # no study yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting:\n{proc.log_path.read_text()[-3000:]}")


@pytest.mark.postgres
def test_a_worker_killed_mid_trial_has_its_trial_retried(tmp_path, postgres, supernet_dir) -> None:
    url, n, interval = postgres.new_database(), 20, 1
    slow = [
        f"search.n_trials={n}",
        f"search.heartbeat_interval={interval}",
        "latency.min_run_time=1.0",
    ]
    # own latency caches: every trial measures (a cached latency would make a trial too short)
    victim = start_worker(tmp_path, "victim", supernet_dir, url, *slow, cache="victim-latency")
    survivor = start_worker(tmp_path, "survivor", supernet_dir, url, *slow, cache="surv-latency")
    wait_for(
        lambda: any(
            t.user_attrs.get("worker", "").endswith(f":{survivor.pid}")
            for t in trials(url, TrialState.COMPLETE)
        ),
        survivor,
    )

    def victim_mid_trial() -> bool:  # its trial started 0.3-0.8 s ago: it lasts over a second
        now = time.time()
        return any(
            t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            and 0.3 < now - t.datetime_start.timestamp() < 0.8
            for t in trials(url, TrialState.RUNNING)
        )

    wait_for(victim_mid_trial, victim)
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finish(survivor)

    done, failed = trials(url, TrialState.COMPLETE), trials(url, TrialState.FAIL)
    assert len(done) == n and len(failed) == 1  # the victim's trial, and nothing else
    killed = failed[0]
    assert killed.datetime_start.timestamp() < killed_at
    retries = [t for t in done if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params  # ran again, same params
    # failed once its last heartbeat (up to an interval before the kill) was 2 intervals old,
    # noticed when the survivor starts its next trial
    seconds = killed.datetime_complete.timestamp() - killed_at
    print(f"trial {killed.number} failed {seconds:.1f} s after its worker was killed")
    assert interval <= seconds < 2 * interval + 10, seconds


def test_two_workers_share_a_journal_file(tmp_path, supernet_dir) -> None:
    url, n = f"journal:///{tmp_path / 'study.log'}", 8
    workers = [
        start_worker(tmp_path, f"w{i}", supernet_dir, url, f"search.n_trials={n}") for i in range(2)
    ]
    for proc in workers:
        finish(proc)
    done = trials(url, TrialState.COMPLETE)
    assert n <= len(done) <= n + 1  # no heartbeats: each extra worker may overshoot by one
    assert sum(t.user_attrs.get("reference") == "baseline" for t in done) == 1
    assert overlapping_duplicates(done) == []
