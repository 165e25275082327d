"""``benchmarks/ranking.py`` end to end on tiny budgets, and ``--standalone-from``: a second run
takes every stand-alone result of the first run's CSV (same budget) instead of training again,
a run with another budget takes none, and ``--finetune-steps`` scores fine-tuned subnets."""

from __future__ import annotations

import csv

import pytest

from benchmarks.ranking import BUDGET_KEYS, load_standalone, main
from benchmarks.ranking_ceiling import main as ceiling_main


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_ranking_dry_run_and_reuse_of_standalone_results(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    common = [
        "--dry-run",
        "--task",
        "mqar",
        "--archs-per-type",
        "1",
        "--workers",
        "1",
        "--bootstrap",
        "50",
    ]
    assert main([*common, "--out", str(first), "--supernet-threads", "2"]) == 0
    assert "s at 2 thread(s). Supernet score" in capsys.readouterr().out
    rows = _rows(first / "ranking.csv")
    assert len(rows) == 5 and {r["type"] for r in rows} == {
        "softmax",
        "sqa",
        "linear",
        "sliding_window",
        "ssm",
    }
    capsys.readouterr()
    assert (
        main([*common, "--out", str(second), "--standalone-from", str(first / "ranking.csv")]) == 0
    )
    assert "5 results taken from" in capsys.readouterr().out
    assert (
        main([*common, "--out", str(first), "--standalone-from", str(first / "ranking.csv")]) == 0
    )
    assert f"reused from {first / 'supernet'}" in capsys.readouterr().out  # same settings
    again = _rows(second / "ranking.csv")
    assert [(r["signature"], r["standalone"]) for r in again] == [
        (r["signature"], r["standalone"]) for r in rows
    ]
    tuned = tmp_path / "tuned"  # scored after 2 fine-tuning steps from the supernet's weights
    assert (
        main(
            [
                *common,
                "--out",
                str(tuned),
                "--finetune-steps",
                "2",
                "--standalone-from",
                str(first / "ranking.csv"),
            ]
        )
        == 0
    )
    assert "fine-tuned 2 steps" in capsys.readouterr().out
    assert all(0.0 <= float(r["inherited"]) <= 1.0 for r in _rows(tuned / "ranking.csv"))
    budget = {k: rows[0][k] for k in BUDGET_KEYS}
    assert budget["standalone_batch"] == "16"
    assert len(load_standalone(str(first / "ranking.csv"), budget)) == 5
    assert load_standalone(str(first / "ranking.csv"), {**budget, "standalone_steps": "4"}) == {}
    assert load_standalone(str(first / "ranking.csv"), {**budget, "standalone_batch": "8"}) == {}
    # a CSV written before the batch column: trained with the task's batch size (16 here)
    old = tmp_path / "old.csv"
    with old.open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=[k for k in rows[0] if k != "standalone_batch"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    assert len(load_standalone(str(old), budget)) == 5
    # the ceiling: every arch trained again with its budget and another seed
    ceiling = tmp_path / "ceiling.csv"
    assert (
        ceiling_main(
            [
                "--from",
                str(first / "ranking.csv"),
                "--seed",
                "1",
                "--workers",
                "1",
                "--bootstrap",
                "50",
                "--out",
                str(ceiling),
                "--no-write",
            ]
        )
        == 0
    )
    assert "stand-alone seed 1 vs seed 0" in capsys.readouterr().out
    pairs = _rows(ceiling)
    assert [float(r["first"]) for r in pairs] == [float(r["standalone"]) for r in rows]
    assert all(0.0 <= float(r["second"]) <= 1.0 and float(r["second_seconds"]) > 0 for r in pairs)
    # the second runs reused from that CSV: nothing trained, the same pairs
    again = tmp_path / "again.csv"
    assert (
        ceiling_main(
            [
                "--from",
                str(first / "ranking.csv"),
                "--second-from",
                str(ceiling),
                "--bootstrap",
                "50",
                "--out",
                str(again),
                "--no-write",
            ]
        )
        == 0
    )
    assert "supernet vs mean of both" in capsys.readouterr().out
    assert _rows(again) == pairs
    with pytest.raises(ValueError, match="other archs, first results or seed"):
        ceiling_main(
            [
                "--from",
                str(first / "ranking.csv"),
                "--second-from",
                str(ceiling),
                "--seed",
                "2",
                "--no-write",
            ]
        )
    with pytest.raises(ValueError, match="trained with that seed"):
        ceiling_main(["--from", str(first / "ranking.csv"), "--seed", "0", "--no-write"])


def test_standalone_from_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_standalone(str(tmp_path / "nope.csv"), {})
