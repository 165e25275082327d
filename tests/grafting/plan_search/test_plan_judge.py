"""The search's fidelity equals the grafting report's measure on the same text, and latency is
one alternating-rounds measurement (speedup = the median round's host / grafted)."""

from __future__ import annotations

import copy

import pytest
import torch

from grafting.checkpoints import load_host
from grafting.data import batches
from grafting.plan import load_plan
from grafting.plan_search.judge import Judge
from grafting.report import decoder_fidelity, encoder_fidelity, latency
from grafting.surgery import graft

TEXTS = [
    "The river ran quietly past the old mill, where the miller's daughter sat reading.",
    "Children ran between the stalls while their parents argued about prices.",
    "When the storm came, it came quickly.",
    "A letter arrived on Tuesday, written in a careful, old-fashioned hand, asking her to come.",
]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fidelity_is_the_reports_measure(tiny_models, family):
    host = load_host(tiny_models[family])
    if host.tokenizer.pad_token is None:
        host.tokenizer.pad_token = host.tokenizer.eos_token
    data = batches(host.tokenizer, TEXTS, 2, 64)  # padded: masks matter
    student = copy.deepcopy(host.model)
    torch.manual_seed(0)  # fresh operator weights: far enough from the host to measure
    graft(student, host.family, load_plan("linear_50"), init=False)
    judge = Judge(host, {"texts": data})
    got = judge.fidelity(student)
    if family == "bert":
        want = encoder_fidelity(host, host.model, student, data)["mean_cosine"]
        assert judge.direction == "maximize" and got["cosine"] == pytest.approx(want, abs=1e-6)
        assert got["cosine"] < 0.999
    else:
        want = decoder_fidelity(host.model, student, data)
        assert judge.direction == "minimize" and got["kl"] == pytest.approx(want["kl"], rel=1e-5)
        assert got["texts_ppl_ratio"] == pytest.approx(want["ppl_ratio"], rel=1e-5)
        assert got["kl"] > 1e-4
    assert judge.fidelity(copy.deepcopy(host.model))[judge.name] == pytest.approx(
        1.0 if family == "bert" else 0.0, abs=1e-5
    )


def test_latency_is_one_alternating_rounds_measurement(tiny_models):
    host = load_host(tiny_models["bert"])
    row = latency(host.model, copy.deepcopy(host.model), [32], 1000, rounds=3, min_run_time=0.0)[0]
    assert row["rounds"] >= 3 and row["seq_len"] == 32
    assert row["speedup"] == pytest.approx(row["host_ms"] / row["grafted_ms"])
    assert row["host_ms"] > 0 and row["grafted_ms"] > 0
