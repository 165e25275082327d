"""``python -m grafting.plan_search`` end to end on tiny hosts: the front, plans that
``grafting.graft`` takes, finalized graft folders, resume without redoing work, and bad input
as one line with exit status 2 that leaves the folder as it was."""

from __future__ import annotations

import csv
import json

import pytest

from grafting.plan import load_plan
from grafting.plan_search.__main__ import main

TINY = [
    "stage1.steps=3",
    "stage2.steps=2",
    "text.calib_sentences=8",
    "text.calib_passages=2",
    "text.passage_tokens=[64,128]",
    "text.batch_size=4",
    "report.sentences=8",
    "report.passages=2",
    "report.lengths=[32]",
    "report.rounds=1",
    "report.min_run_time=0.01",
    "report.windows=1",
    "report.window_tokens=48",
    "report.sample_tokens=0",
    "report.decode_tokens=0",
    "search.repeats=1",
    "search.min_run_time=0.01",
    "search.seq_len=32",
    "search.validation_windows=1",
    "search.window_tokens=24",
    "finalize.k=1",
    "progress=false",
]


def argv(tiny_models, text_file, out, family="bert", trials=6):
    return [
        f"base={tiny_models[family]}",
        f"text.source={text_file}",
        f"out={out}",
        f"search.trials={trials}",
        *TINY,
    ]


def test_search_writes_front_plans_and_finalized_models_then_resumes(
    tiny_models, text_file, tmp_path, capsys
):
    out = tmp_path / "s"
    assert main(argv(tiny_models, text_file, out)) == 0
    printed = capsys.readouterr().out
    assert "latency_x_host" in printed and "6 plans of 64 scored" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["plans"] == 6 and report["trials"] >= 6 and report["fidelity"] == "cosine"
    rows = list(csv.DictReader((out / "front.csv").open()))
    names = {r["baseline"] for r in rows}
    assert {"linear_50", "swa_50", "sqa_50", "mlp_narrow_50"} <= names  # every baseline is shown
    assert any(r["front"] == "True" for r in rows)
    for r in rows:  # validation fidelity and measured latency of every row
        assert 0 < float(r["latency_x_host"]) and -1 <= float(r["val_cosine"]) <= 1
    finalized = sorted(p.name for p in (out / "finalized").iterdir())
    assert "linear_50" in finalized  # finalize.baselines, beside the chosen front member
    linear = json.loads((out / "finalized" / "linear_50" / "report.json").read_text())
    assert linear["stage2"]["steps"] == 2 and "passages" in linear["fidelity"]
    assert any(r["baseline"] == "linear_50" and r["passages"] for r in rows)
    plan = load_plan(out / "plans" / "linear_50.yaml")  # a plan grafting.graft takes
    assert sorted(plan.resolve(2)) == [(1, "mixer")]
    assert (out / "pareto.png").stat().st_size > 1000

    # resume: the library and finalized folders are reused, the study grows to the new total
    stamps = {
        p: p.stat().st_mtime_ns
        for p in [
            out / "library" / "pieces.safetensors",
            out / "finalized" / "linear_50" / "grafted.safetensors",
        ]
    }
    assert main(argv(tiny_models, text_file, out, trials=9)) == 0
    assert json.loads((out / "report.json").read_text())["plans"] == 9
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # other stage-2 settings: the finalized models are made again, the library is kept
    assert main(argv(tiny_models, text_file, out, trials=9) + ["stage2.steps=3"]) == 0
    linear = json.loads((out / "finalized" / "linear_50" / "report.json").read_text())
    assert linear["stage2"]["steps"] == 3
    library = out / "library" / "pieces.safetensors"
    assert library.stat().st_mtime_ns == stamps[library]
    # another way of scoring plans cannot join this study
    assert main(argv(tiny_models, text_file, out, trials=9) + ["search.seq_len=64"]) == 2
    assert "other search settings" in capsys.readouterr().err


def test_decoder_host_is_searched_on_kl(tiny_models, text_file, tmp_path, capsys):
    out = tmp_path / "d"
    assert (
        main(
            argv(tiny_models, text_file, out, family="llama", trials=5)
            + ["finalize.baselines=[]", "finalize.max_latency_of=null"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["fidelity"] == "kl"
    assert all(row["val_kl"] >= 0 for row in report["front"])
    finalized = next((out / "finalized").iterdir())
    fid = json.loads((finalized / "report.json").read_text())["fidelity"]
    assert "windows" in fid and fid["windows"]["kl"] >= 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["graft_space=nope"], "no graft_spaces config 'nope'"),
        (["finalize.baselines=[linear_100]"], "not one of the space's baselines"),
        (["text.validation_fraction=0"], "validation_fraction must be > 0"),
    ],
)
def test_bad_input_is_one_line(tiny_models, text_file, tmp_path, capsys, extra, message):
    assert main(argv(tiny_models, text_file, tmp_path / "x", trials=2) + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_another_search_in_the_same_folder_is_refused_and_changes_nothing(
    tiny_models, text_file, tmp_path, capsys
):
    out = tmp_path / "s"
    assert (
        main(
            argv(tiny_models, text_file, out, trials=2)
            + ["finalize.k=0", "finalize.baselines=[]", "finalize.max_latency_of=null"]
        )
        == 0
    )
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(argv(tiny_models, text_file, out, family="gpt2", trials=2)) == 2
    assert "holds a search with other base settings" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert main(argv(tiny_models, text_file, tmp_path / "other", trials=2)) == 2
    assert "is not a plan-search folder" in capsys.readouterr().err
