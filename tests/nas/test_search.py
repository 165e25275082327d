"""``python -m nas.search`` end to end on tiny budgets: outputs, resume (also after a kill),
config mismatch, constraints, a user space file, and the one-line errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from nas.search import compose, main, run_search
from search_spaces import Arch
from search_spaces.space import load_space

TINY = [
    "task=mqar",
    "train.max_steps=2",
    "train.teacher_steps=1",
    "train.val_every=1",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=0",
    "report.plots=false",
    "task.num_train=32",
    "task.num_val=16",
    "task.num_test=16",
    "search.val_batches=1",
    "latency.shape=[1,32]",
    "latency.repeats=1",
    "latency.min_run_time=0.01",
]


def tiny(tmp_path: Path, *extra: str, trials: int = 4) -> list[str]:
    return [
        "+space=efficient_attn",
        *TINY,
        f"search.n_trials={trials}",
        f"run_dir={tmp_path / 'run'}",
        f"latency.cache_dir={tmp_path / 'lat'}",
        *extra,
    ]


def completed(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    info = json.loads((run_dir / "run.json").read_text())
    study = optuna.load_study(study_name=info["study_name"], storage=info["storage"])
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_search_writes_the_report_and_resumes(tmp_path, capsys) -> None:
    result = run_search(compose(tiny(tmp_path, "report.plots=true")))
    run = tmp_path / "run"
    for name in ("run.json", "config.yaml", "pareto.csv", "pareto.png", "pareto.html", "study.db"):
        assert (run / name).is_file(), name
    assert (run / "supernet" / "supernet.safetensors").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["space"] == "efficient_attn" and info["task"]["name"] == "mqar"
    assert info["study_name"] == "efficient_attn-mqar" and info["device"]["threads"] == 1

    trials = completed(run)
    assert len(trials) == 4
    space = load_space("efficient_attn")
    first = trials[0]
    assert first.number == 0 and first.user_attrs["reference"] == "baseline"
    assert first.user_attrs["signature"] == space.baseline(result.baseline.arch.head).signature

    rows = list(csv.DictReader((run / "pareto.csv").open()))
    assert [int(r["trial"]) for r in rows] == [m.trial for m in result.pareto]
    assert {r["latency_source"] for r in rows} == {"measured"}
    ratios = [float(r["latency_ratio"]) for r in rows]
    assert ratios == sorted(ratios)
    for r in rows:
        arch = Arch.load(run / "pareto" / f"trial_{r['trial']}" / "arch.yaml")
        assert arch.signature == r["signature"] and space.contains(arch)
        beats = (
            float(r["latency_ratio"]) < result.baseline.latency_ratio
            and float(r["test_metric"]) >= result.baseline.test_metric
        )
        assert r["beats_baseline"] == str(beats)
    out = capsys.readouterr().out
    assert "architecture" in out and "base" in out
    assert f"python -m nas.export run={run} trials=pareto retrain=true" in out

    # the same command with a larger budget continues the study and reuses the supernet
    run_search(compose(tiny(tmp_path, trials=6)))
    assert "reusing the supernet" in capsys.readouterr().out
    trials = completed(run)
    assert len(trials) == 6
    assert sum(t.user_attrs.get("reference") == "baseline" for t in trials) == 1


def test_changed_configuration_is_refused(tmp_path, capsys) -> None:
    assert main(tiny(tmp_path, trials=1)) == 0
    before = (tmp_path / "run" / "run.json").read_text()
    capsys.readouterr()
    assert main(tiny(tmp_path, "task.num_pairs=4", trials=1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run_dir") and "task.num_pairs: 8 -> 4" in err
    assert "\n" not in err
    assert (tmp_path / "run" / "run.json").read_text() == before


def test_constraints_keep_the_front_feasible(tmp_path) -> None:
    limit = 300_000
    result = run_search(compose(tiny(tmp_path, f"search.max_params={limit}", trials=6)))
    trials = completed(tmp_path / "run")
    assert any(t.constraints["params"] > 0 for t in trials)  # the baseline is larger
    assert result.pareto and all(m.params <= limit for m in result.pareto)


def test_user_space_file(tmp_path) -> None:
    data = yaml.safe_load(Path(load_space("efficient_attn").source).read_text())
    data["name"] = "my_space"
    data["mixer"] = {k: v for k, v in data["mixer"].items() if k in ("softmax", "linear")}
    data["references"]["smallest"]["mixer"] = {"name": "linear", "heads": 2, "feature_map": "elu1"}
    path = tmp_path / "my_space.yaml"
    path.write_text(yaml.safe_dump(data))
    argv = [a if not a.startswith("+space=") else f"+space={path}" for a in tiny(tmp_path)]
    result = run_search(compose(argv))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["space"] == "my_space"
    assert {layer.mixer.name for m in result.pareto for layer in m.arch.layers} <= {
        "softmax",
        "linear",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "choose a search space with +space=NAME; available: efficient_attn"),
        (["+space=nope"], "unknown search space; available:"),
        (["+space=efficient_attn", "search.sampler=bogus"], "search.sampler must be one of"),
        (["+space=efficient_attn", "search.bogus=1"], "Could not override 'search.bogus'"),
        (["+space=efficient_attn", "task=nope"], "Could not find 'task/nope'"),
        (["+space=efficient_attn", "search.n_trials=0"], "search.n_trials must be a positive"),
        (["+space=efficient_attn", "search.n_trials=ten"], "search.n_trials must be a positive"),
        (["+space=efficient_attn", "search.timeout_s=-1"], "search.timeout_s must be a positive"),
        (["+space=efficient_attn", "latency.device=tpu"], "latency.device must be cpu or cuda"),
        (["+space=efficient_attn", "latency.threads=0"], "latency.threads must be a positive"),
        (
            ["+space=efficient_attn", "latency.shape=[0,16]"],
            "latency.shape must be [batch, length]",
        ),
        (["+space=efficient_attn", "search.storage=foo://bar"], "not a usable storage URL"),
        (
            ["+space=efficient_attn", "search.storage=sqlite:////nowhere/at/all/s.db"],
            "does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message) -> None:
    assert main([*argv, f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


KILL_AFTER_TWO = """
import os, signal
from optuna.trial import TrialState

def kill(study, trial):  # a `search.callbacks` entry: SIGKILL once two trials are stored
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_resume_after_a_kill(tmp_path) -> None:
    """A search killed mid-study (by its own callback, after the 2nd completed trial, as a
    power cut would) resumes: the next run reaches the budget, with the baseline once."""
    (tmp_path / "kill_hook.py").write_text(KILL_AFTER_TWO)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)])}
    argv = tiny(tmp_path, "search.callbacks=[kill_hook.kill]", trials=6)
    proc = subprocess.run(
        [sys.executable, "-m", "nas.search", *argv], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(completed(tmp_path / "run")) == 2
    run_search(compose(tiny(tmp_path, trials=4)))
    trials = completed(tmp_path / "run")
    assert len(trials) == 4
    assert sum(t.user_attrs.get("reference") == "baseline" for t in trials) == 1


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp"])
def test_every_sampler_runs(tmp_path, sampler) -> None:
    run_search(compose(tiny(tmp_path, f"search.sampler={sampler}", trials=3)))
    assert len(completed(tmp_path / "run")) == 3


def test_default_task_is_charlm_and_preset_mqar_restores_the_recall_recipe() -> None:
    default = compose(["+space=efficient_attn"])
    assert default.task.name == "charlm" and default.train.teacher_steps == 0
    recall = compose(["+space=efficient_attn", "preset=mqar"])
    assert recall.task.name == "mqar" and recall.train.teacher_steps == 700
    assert recall.train.batch_size == 64 and recall.train.max_steps == 1100


def test_a_trial_that_raises_is_recorded_and_the_search_goes_on(
    tmp_path, monkeypatch, capsys
) -> None:
    """An operator rejecting a shape, a NaN loss, out of memory: the trial is failed with its
    reason, the next trials run, the study reaches its budget and the report counts failures."""
    from nas.study import Scorer

    real, calls = Scorer.__call__, []

    def flaky(self, arch):
        calls.append(arch.signature)
        if len(calls) in (2, 4):  # two of the trials hit an error
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, arch)

    monkeypatch.setattr(Scorer, "__call__", flaky)
    run_search(compose(tiny(tmp_path, trials=4)))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    study = optuna.load_study(study_name=info["study_name"], storage=info["storage"])
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(completed(tmp_path / "run")) == 4 and len(failed) == 2
    assert {t.user_attrs["error"] for t in failed} == {
        "RuntimeError: CUDA out of memory (simulated)"
    }
    out, err = capsys.readouterr()
    assert "2 trials failed and were skipped" in out and "Traceback" not in err
