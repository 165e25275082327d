"""``python -m grafting.graft`` end to end on tiny budgets, one-line errors with exit status 2,
and ``grafting.load`` in a fresh process reproducing the saved model's outputs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import grafting
from grafting.checkpoints import load_host
from grafting.graft import main
from grafting.plan import load_plan
from grafting.surgery import graft

TINY = [
    "stage1.steps=3",
    "stage2.steps=2",
    "text.calib_sentences=8",
    "text.calib_passages=2",
    "text.passage_tokens=[64,128]",
    "text.batch_size=4",
    "report.sentences=8",
    "report.passages=2",
    "report.lengths=[32,64]",
    "report.rounds=1",
    "report.min_run_time=0.01",
    "report.decode_prompt=16",
    "report.decode_tokens=4",
    "report.windows=2",
    "report.window_tokens=48",
    "report.sample_prompt_words=6",
    "report.sample_tokens=5",
    "progress=false",
]


@pytest.mark.parametrize("family,plan", [("bert", "hybrid_swa_linear_50"), ("llama", None)])
def test_cli_end_to_end(tiny_models, text_file, tmp_path, capsys, family, plan):
    out = tmp_path / "out"
    argv = [f"base={tiny_models[family]}", f"out={out}", f"text.source={text_file}"]
    assert main(argv + ([f"plan={plan}"] if plan else []) + TINY) == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "params" in printed
    report = json.loads((out / "report.json").read_text())
    texts = {"passages", "ood_passages"}  # ood: the Python reference (report.ood_source=pydoc)
    if family == "bert":
        assert set(report["fidelity"]) == texts | {"sentences", "ood_sentences"}
    else:  # decoders: long windows in and out of domain, and a greedy sample
        assert set(report["fidelity"]) == texts | {"windows", "ood_windows"}
        assert report["fidelity"]["ood_windows"]["n"] == 2
        assert set(report["sample"]) == {"prompt", "host", "grafted"}
        assert "sample, greedy after" in printed
    if plan is None:  # the decoders' default plan
        assert load_plan(out / "plan.yaml").name == "hybrid_swa_linear_50"
    key = "mean_cosine" if family == "bert" else "top1_agree"
    assert all(key in v for v in report["fidelity"].values())
    assert report["text"]["ood_source"] == "pydoc"
    assert report["stage1"]["steps"] == 3 and report["stage2"]["steps"] == 2
    assert {"stage1", "stage2", "report"} <= set(report["seconds"])
    if family == "llama":  # greedy decoding of report.decode_tokens=4 after a 16-token prompt
        dec = report["decode"]
        assert (dec["prompt_len"], dec["new_tokens"]) == (16, 4)
        for who in ("host", "grafted"):  # tokens counted in generate's output, over its seconds
            assert dec[f"{who}_tokens"] == 4
            assert dec[f"{who}_tokens_per_s"] == pytest.approx(4 / dec[f"{who}_seconds"])
    for name in ("grafted.safetensors", "plan.yaml", "config.yaml", "config.json"):
        assert (out / name).is_file()
    model = grafting.load(out)
    assert type(model).__name__ == ("BertModel" if family == "bert" else "LlamaForCausalLM")
    # a failed second run must not touch the existing output
    before = (out / "grafted.safetensors").read_bytes()
    assert main(argv + TINY) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "grafted.safetensors").read_bytes() == before


def _tiny_corrupt(tmp_path: Path, tiny_models) -> Path:
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for f in tiny_models["bert"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    return bad


def _unsupported(tmp_path: Path) -> Path:
    from transformers import T5Config

    path = tmp_path / "t5"
    T5Config(d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "neither a preset"),
        ("corrupt", "corrupt"),
        ("unsupported", "unsupported model family 't5'"),
        ("plan", "no graft config"),
        ("layer", "out of range"),
    ],
)
def test_user_errors_are_one_line_exit_2(tiny_models, tmp_path, capsys, case, match):
    base = {
        "missing": tmp_path / "nope",
        "corrupt": _tiny_corrupt(tmp_path, tiny_models) if case == "corrupt" else None,
        "unsupported": _unsupported(tmp_path) if case == "unsupported" else None,
    }.get(case) or tiny_models["bert"]
    plan = {"plan": "no_such_plan", "layer": str(tmp_path / "p.yaml")}.get(case, "linear_50")
    (tmp_path / "p.yaml").write_text("grafts: [{layers: 7, mixer: {name: linear}}]\n")
    assert main([f"base={base}", f"plan={plan}", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and "\n" not in err
    assert not (tmp_path / "o").exists()


PLUGIN = """
from search_spaces import register_op
from search_spaces.ops.linear_attention import LinearAttention


@register_op("test_plugin_linear", kind="mixer")
class PluginLinear(LinearAttention):  # a user's operator, defined outside the platform
    pass
"""


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A user's module on ``sys.path`` defining an operator; unregistered and unloaded after."""
    from search_spaces.registry import _REGISTRY

    (tmp_path / "graft_plugin_ops.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "graft_plugin_ops"
    _REGISTRY["mixer"].pop("test_plugin_linear", None)
    sys.modules.pop("graft_plugin_ops", None)


def test_plugins_bring_a_users_operator_into_a_plan(
    tiny_models, text_file, tmp_path, capsys, plugin_module
):
    plan = tmp_path / "plugin_plan.yaml"
    plan.write_text("name: plugin_50\ngrafts: [{layers: odd, mixer: {name: test_plugin_linear}}]\n")
    argv = [f"base={tiny_models['bert']}", f"plan={plan}", f"text.source={text_file}", *TINY]
    assert main([*argv, f"out={tmp_path / 'without'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'test_plugin_linear'" in err and "plugins=" in err and "\n" not in err
    assert not (tmp_path / "without").exists()
    assert main([*argv, f"out={tmp_path / 'with'}", f"plugins=[{plugin_module}]"]) == 0
    saved = load_plan(tmp_path / "with" / "plan.yaml")
    assert saved.groups[0].slots["mixer"].op == "test_plugin_linear"
    model = grafting.load(tmp_path / "with")
    assert any(type(m).__name__ == "PluginLinear" for m in model.modules())

    # as in a new process: the export imports the plugins the graft recorded, and says so
    from grafting.export import main as export_main
    from search_spaces.registry import _REGISTRY

    _REGISTRY["mixer"].pop("test_plugin_linear")
    sys.modules.pop(plugin_module)
    out = tmp_path / "export"
    assert export_main([f"run={tmp_path / 'with'}", f"out={out}", "onnx.enabled=false"]) == 0
    assert json.loads((out / "export.json").read_text())["plugins"] == [plugin_module]
    assert f"import {plugin_module}  # defines operators" in (out / "README.md").read_text()


RELOAD = """
import sys, torch, grafting
from safetensors.torch import save_file
ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0, 0], [101, 2178, 2028, 1012, 7592, 2088, 2003, 102]])
mask = (ids != 0).long()
for path in sys.argv[1:]:
    model = grafting.load(path)
    out = {}
    with torch.no_grad():
        if hasattr(model, "generate"):
            out["tokens"] = model.generate(
                input_ids=ids[1:], attention_mask=mask[1:], max_new_tokens=6, do_sample=False, pad_token_id=0
            )
            out["y"] = model(input_ids=ids, attention_mask=mask).logits
        else:
            out["y"] = model(input_ids=ids, attention_mask=mask).last_hidden_state
    save_file(out, path + "/outputs.safetensors")
"""

CASES = [
    ("bert", "linear_50"),
    ("gpt2", "swa_50"),
    ("qwen2", "linear_100"),
    ("llama", "mlp_narrow_50"),
]


def test_reload_in_a_fresh_process_is_identical(tiny_models, tmp_path):
    from safetensors.torch import load_file

    models, dirs = {}, []
    for family, plan in CASES:
        host = load_host(tiny_models[family])
        model = copy.deepcopy(host.model)
        graft(model, host.family, load_plan(plan))
        torch.manual_seed(1)
        with torch.no_grad():  # as if trained: every weight moved
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-2)
        out = tmp_path / family
        grafting.save(out, model, load_plan(plan), tokenizer=host.tokenizer)
        models[family], dirs = model, dirs + [str(out)]
    code = subprocess.run(
        [sys.executable, "-c", RELOAD, *dirs], capture_output=True, text=True, timeout=120
    )
    assert code.returncode == 0, code.stderr[-2000:]
    ids = torch.tensor(
        [[101, 2023, 2003, 1037, 3231, 102, 0, 0], [101, 2178, 2028, 1012, 7592, 2088, 2003, 102]]
    )
    mask = (ids != 0).long()
    real = mask.bool()
    for family, model in models.items():
        got = load_file(str(tmp_path / family / "outputs.safetensors"))
        with torch.no_grad():
            if family == "bert":
                y = model(input_ids=ids, attention_mask=mask).last_hidden_state
            else:
                y = model(input_ids=ids, attention_mask=mask).logits
                tokens = model.generate(
                    input_ids=ids[1:],
                    attention_mask=mask[1:],
                    max_new_tokens=6,
                    do_sample=False,
                    pad_token_id=0,
                )
                assert torch.equal(got["tokens"], tokens), family
        torch.testing.assert_close(got["y"][real], y[real], rtol=0, atol=1e-6, msg=family)


def test_default_plan_depends_on_the_host(tiny_models):
    from grafting.pipeline import default_plan

    assert default_plan(tiny_models["bert"]) == "linear_50"
    assert {default_plan(tiny_models[f]) for f in ("gpt2", "llama")} == {"hybrid_swa_linear_50"}
