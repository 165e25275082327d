"""Stage 1 (cached activations, per-layer regression) and LoRA merging in stage 2."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from safetensors.torch import load_file
from transformers.pytorch_utils import Conv1D

from grafting import stage1, stage2
from grafting.checkpoints import load_host
from grafting.data import batches
from grafting.lora import add_lora, lora_targets, merge_lora
from grafting.plan import load_plan
from grafting.surgery import graft

TEXTS = [
    "The river ran quietly past the old mill.",
    "Children ran between the stalls while their parents argued about prices.",
    "When the storm came, it came quickly, and the streets were soon empty.",
    "A letter arrived on Tuesday, written in a careful, old-fashioned hand.",
]


def test_stage1_caches_every_slot_and_lowers_the_loss(tmp_path):
    host = load_host("all-MiniLM-L6-v2")
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, load_plan("linear_50"))
    data = batches(host.tokenizer, TEXTS, 1, 64)  # no padding: the check below passes no mask
    files = stage1.capture(host.model, host.family, list(wrappers), data, tmp_path)
    cached = load_file(str(files[0]))
    assert set(cached) == {"attention_mask"} | {f"{i}.mixer.{t}" for i in (1, 3, 5) for t in "xy"}
    with torch.no_grad():  # the cached input/output pair is the teacher's own module
        att = host.model.encoder.layer[1].attention
        y = att(cached["1.mixer.x"])[0]
    torch.testing.assert_close(y, cached["1.mixer.y"])
    result = stage1.train(wrappers, files, steps=20, lr=3e-3, loss="huber", progress=False)
    for name, losses in result["loss"].items():
        assert losses["last"] < losses["first"], name


def test_stage1_rejects_an_unknown_loss(tmp_path):
    with pytest.raises(ValueError, match="stage1.loss"):
        stage1.train({}, [], steps=1, lr=1e-3, loss="l3")


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2"])
def test_lora_adapts_every_host_linear_and_merges_back(tiny_models, family):
    """Every linear layer of the host outside the graft gets an adapter (GPT-2's ``Conv1D``
    too), the grafted operators none; merged, the model has the host's keys and the function
    it had with the adapters."""
    host = load_host(tiny_models[family])
    model = copy.deepcopy(host.model)
    plan = load_plan("linear_50")
    wrappers = list(graft(model, host.family, plan).values())
    keys = set(model.state_dict())
    skip = [*wrappers, model.get_output_embeddings()] if model.get_output_embeddings() else wrappers
    targets = lora_targets(model, skip)
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    assert 0 < len(targets) < len(linears)  # the graft's own linears are left out
    adapters = add_lora(model, skip, rank=2, alpha=4)
    adapted = {
        n.removesuffix(".lora_A") for n, _ in adapters.named_modules() if n.endswith(".lora_A")
    }
    assert len(adapted) == len(targets)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at 0: make the update real
    b = host.tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = lambda o: o.last_hidden_state if family == "bert" else o.logits  # noqa: E731
    with torch.no_grad():
        before = out(model(**b))
        merged = merge_lora(adapters)
        after = out(merged(**b))
    assert merged is model and set(model.state_dict()) == keys
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_stage1_visits_every_cache_file_once_per_pass_in_a_seeded_order():
    order = stage1.visit_order(5, 13, seed=0)
    assert len(order) == 13
    assert sorted(order[:5]) == sorted(order[5:10]) == list(range(5))  # whole passes
    assert order[:5] != order[5:10]  # each pass reshuffled
    assert order == stage1.visit_order(5, 13, seed=0)
    assert order != stage1.visit_order(5, 13, seed=1)


def test_stage1_runs_any_step_count(tmp_path):
    """10 steps crashed inside OneCycleLR (a warm-up of zero length); 1 and 11 bracket it."""
    host = load_host("all-MiniLM-L6-v2")
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, load_plan("linear_50"))
    files = stage1.capture(
        host.model, host.family, list(wrappers), batches(host.tokenizer, TEXTS[:2], 1, 32), tmp_path
    )
    for steps in (1, 10, 11):
        assert stage1.train(wrappers, files, steps=steps, lr=1e-3, progress=False)["steps"] == steps


def test_stage2_runs_any_step_count(tiny_models, tmp_path):
    """Stage 2 built the same OneCycleLR as stage 1: 10 steps crashed; it now reports every step."""
    host = load_host(str(tiny_models["llama"]))
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, load_plan("linear_50"))
    data = batches(host.tokenizer, TEXTS, 2, 32)
    cfg = {
        "lr": 1e-3,
        "train": "grafted",
        "temperature": 1.0,
        "mse_weight": 1.0,
        "accelerator": "cpu",
    }
    for steps in (1, 10, 11):
        result = stage2.train(
            host,
            student,
            host.model,
            list(wrappers.values()),
            data,
            {**cfg, "steps": steps},
            tmp_path / f"logs{steps}",
            progress=False,
        )
        assert result["steps"] == steps
        assert sorted(int(s) for s in _logged_steps(tmp_path / f"logs{steps}"))[-1] < steps


def _logged_steps(log_dir):
    with (log_dir / "stage2" / "metrics.csv").open() as f:
        return [row["step"] for row in csv.DictReader(f) if row.get("step")]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stage2_lora_trains_adapters_and_leaves_the_host_structure(tiny_models, tmp_path, family):
    """``stage2.train=lora`` trains the graft and the adapters only; after merging, every host
    weight that had an adapter has changed, the model has the host's keys, nothing else moved."""
    host = load_host(str(tiny_models[family]))
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, load_plan("linear_50"))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = {
        "lr": 1e-2,
        "train": "lora",
        "lora_rank": 2,
        "lora_alpha": 4,
        "steps": 3,
        "temperature": 1.0,
        "accelerator": "cpu",
    }
    data = batches(host.tokenizer, TEXTS, 2, 32)
    result = stage2.train(
        host,
        student,
        host.model,
        list(wrappers.values()),
        data,
        cfg,
        tmp_path / "logs",
        progress=False,
    )
    after = student.state_dict()
    assert set(after) == set(before) and result["trainable_params"] > 0
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    adapted = {
        f"{n}.weight"
        for n in lora_targets(student, [*wrappers.values(), student.get_output_embeddings()])
    }
    assert adapted and adapted <= changed  # GPT-2's Conv1D layers included
    grafted = {
        f"{n}.{k}"
        for n, m in student.named_modules()
        if m in wrappers.values()
        for k in m.state_dict()
    }
    assert changed <= adapted | grafted
