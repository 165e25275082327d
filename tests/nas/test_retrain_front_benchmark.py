"""``benchmarks/retrain_front.py`` end to end on a tiny character-LM search run: members, the
baseline and latency-matched randoms retrained, reproducible per seed, BENCHMARKS.md untouched."""

from __future__ import annotations

import csv
import json
import math

import pytest

import benchmarks.retrain_front as bench
from nas.search import compose, run_search
from nas.tasks import get_task
from search_spaces import Arch

TINY_CHARLM = [
    "+space=efficient_attn",
    "task=charlm",
    "task.texts=[alice_in_wonderland]",
    "task.seq_len=32",
    "task.batch_size=8",
    "task.latency_shape=[1,32]",
    "train.max_steps=2",
    "train.teacher_steps=1",
    "train.val_every=1",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=0",
    "report.plots=false",
    "report.test_batches=1",
    "search.val_batches=1",
    "search.n_trials=6",
    "latency.repeats=1",
    "latency.min_run_time=0.01",
]


def test_retrain_front_dry_run(tmp_path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    run_search(compose([*TINY_CHARLM, f"run_dir={run}", f"latency.cache_dir={tmp_path / 'lat'}"]))
    written = []
    monkeypatch.setattr(bench, "write_section", lambda *a: written.append(a))
    monkeypatch.setattr(bench, "RESULTS_CSV", tmp_path / "results" / "retrain_front.csv")
    out = tmp_path / "out"
    argv = ["--run", str(run), "--dry-run", "--workers", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    assert written == [] and not bench.RESULTS_CSV.exists()  # BENCHMARKS.md, results/ untouched
    printed = capsys.readouterr().out
    assert "Hypervolume seed 0: front" in printed and "uniform guess log2(" in printed

    with (out / "retrain_front.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    groups = [r["group"] for r in rows]
    assert groups.count("baseline") == 1
    assert 1 <= groups.count("member") <= 2 and groups.count("random") == groups.count("member")
    assert all(math.isfinite(float(r["test_seed0"])) and float(r["params"]) > 0 for r in rows)
    assert float(next(r for r in rows if r["group"] == "baseline")["latency_ratio"]) == 1.0
    assert len({r["signature"] for r in rows}) == len(rows)

    # the same seed retrains to the identical metric; another seed to another one
    member = next(r for r in rows if r["group"] == "member")
    arch = Arch.load(run / "pareto" / f"trial_{member['trial']}" / "arch.yaml")
    task = get_task(json.loads((run / "run.json").read_text())["task"])
    job = dict(arch=arch, task=task, seed=0, steps=3, lr=bench.DEFAULT_LR, threads=1)
    assert bench.retrain_job(job)["test"] == float(member["test_seed0"])
    assert bench.retrain_job({**job, "seed": 1})["test"] != float(member["test_seed0"])


def test_missing_run_directory_is_a_one_line_error(tmp_path, capsys) -> None:
    assert bench.run_main(bench.main, ["--run", str(tmp_path / "nope"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --run") and "run.json" in err and "\n" not in err


def test_hypervolume_ignores_dominated_points_and_points_beyond_the_reference() -> None:
    assert bench.hypervolume([(1.0, 0.5)], (2.0, 1.0)) == pytest.approx(0.5)
    assert bench.hypervolume([(1.0, 0.5), (1.5, 0.8), (3.0, 0.1)], (2.0, 1.0)) == pytest.approx(0.5)
    assert bench.hypervolume([], (2.0, 1.0)) == 0.0
