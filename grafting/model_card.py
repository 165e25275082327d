"""The ``README.md`` model card of an exported grafted model (``python -m grafting.export``).

Every number comes from the export record (``export.json``): the host, the plan and each grafted
(layer, slot, operator), fidelity and latency copied from the graft's ``report.json`` (measured
by ``python -m grafting.graft`` against the host, side by side), and the ONNX check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def _hparams(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items()) or "-"


def grafted_lines(info: Mapping[str, Any]) -> list[str]:
    """One table row per grafted (layer, slot); the other layers keep the host's modules."""
    rows = [
        [g["layer"], g["slot"], f"`{g['op']}`", _hparams(g["hparams"]), g["init"]]
        for g in info["grafted"]
    ]
    layers = sorted({g["layer"] for g in info["grafted"]})
    n = info["host"]["layers"]
    return [
        f"{len(layers)} of {n} layers carry a grafted operator ({', '.join(map(str, layers))}); "
        "every other module is the host's own.",
        "",
        *_table(["layer", "slot", "operator", "hyperparameters", "init"], rows),
    ]


def report_lines(report: Mapping[str, Any] | None, graft: Mapping[str, Any] | None) -> list[str]:
    """Fidelity, latency, decode speed and training from ``report.json`` (verbatim numbers);
    ``graft`` is the graft's resolved configuration (how latency was timed)."""
    if not report:
        return ["The graft folder has no `report.json`: no fidelity or latency numbers."]
    lines = ["### Fidelity to the host (held-out text)", ""]
    fid = report.get("fidelity", {})
    keys = sorted({k for v in fid.values() for k in v if k != "n"})
    lines += _table(["text", "n", *keys], [[t, v.get("n", ""), *(v.get(k, "") for k in keys)] for t, v in fid.items()])  # fmt: skip
    lines += [
        "",
        "Encoders: cosine between host and grafted sentence embeddings and the Spearman "
        "correlation of their pairwise similarities; decoders: perplexities and the mean "
        "per-token KL(host || grafted).",
        "",
        "### Latency (forward pass, host and grafted timed side by side)",
        "",
    ]
    r, threads = (graft or {}).get("report") or {}, (graft or {}).get("threads")
    lines += [
        f"Batch 1, random token ids, `torch.utils.benchmark` median (best of {r.get('rounds', '?')} "
        f"rounds), {threads or 'default'} torch thread(s), on the machine that ran the graft; "
        "compare the ratio, not the absolute times.",
        "",
    ]
    lat = report.get("latency", [])
    if lat:
        rows = [[r["seq_len"], r["host_ms"], r["grafted_ms"], r["speedup"]] for r in lat]
        lines += _table(["seq_len", "host ms", "grafted ms", "speedup"], rows)
    else:
        lines.append("not measured")
    dec = report.get("decode")
    if dec:
        lines += [
            "",
            f"Greedy decoding: {dec['host_tokens_per_s']:.1f} (host) -> "
            f"{dec['grafted_tokens_per_s']:.1f} (grafted) tokens/s after a "
            f"{dec['prompt_len']}-token prompt, {dec['new_tokens']} new tokens.",
        ]
    s1, s2 = report.get("stage1", {}), report.get("stage2", {})
    lines += [
        "",
        f"Training: stage 1 (per-operator regression) {s1.get('steps', '?')} steps, stage 2 "
        f"(end-to-end distillation) {s2.get('steps', '?')} steps.",
    ]
    return lines


def onnx_lines(onnx: Mapping[str, Any] | None) -> list[str]:
    if onnx is None:
        return ["- ONNX: not exported (`onnx.enabled=false`)"]
    dyn = ", ".join(f"{n} ({lo}..{hi if hi is not None else 'any'})" for n, (lo, hi) in onnx["ranges"].items())  # fmt: skip
    return [
        f"- inputs `input_ids`, `attention_mask` (int64) traced at shape {list(onnx['shape'])}; "
        f"output `{onnx['output']}`",
        f"- dynamic axes: {dyn or 'none (fixed shape)'}",
        f"- max abs difference to PyTorch with onnxruntime: {onnx['onnx_max_abs_diff']:.3g} at "
        f"real tokens, over shapes {[list(s) for s in onnx['checked_shapes']]} (with and without "
        f"padding); opset {onnx['onnx_opset']}",
        *[f"- note: {n}" for n in onnx["notes"]],
    ]


def load_lines(info: Mapping[str, Any]) -> list[str]:
    host, onnx = info["host"], info.get("onnx")
    out = "logits" if host["causal"] else "last_hidden_state"
    lines = [
        "With the platform (`pip install` this repository):",
        "",
        "```python",
        "import grafting",
        "from transformers import AutoTokenizer",
        "model = grafting.load('.')  # this folder; a transformers model, eval mode",
        "tokenizer = AutoTokenizer.from_pretrained('.')",
        "batch = tokenizer(['A sentence.'], return_tensors='pt')",
        f"{out} = model(**batch).{out}"
        + ("  # and model.generate(...)" if host["causal"] else ""),  # fmt: skip
        "```",
        "",
    ]
    if onnx is not None:
        fixed_len = "length" not in onnx["ranges"]
        pad = (
            f"padding='max_length', max_length={onnx['shape'][1]}" if fixed_len else "padding=True"
        )
        lines += [
            "With onnxruntime (no platform, no PyTorch):",
            "",
            "```python",
            "import onnxruntime as ort",
            "from transformers import AutoTokenizer",
            "tokenizer = AutoTokenizer.from_pretrained('.')",
            f"batch = tokenizer(['A sentence.'], {pad}, return_tensors='np')",
            "session = ort.InferenceSession('model.onnx')",
            f"({out},) = session.run(None, {{i.name: batch[i.name] for i in session.get_inputs()}})",
            "```",
            "",
        ]
        if "batch" not in onnx["ranges"]:
            lines += [f"The batch size is fixed at {onnx['shape'][0]}.", ""]
    if not host["causal"]:
        source = (
            "the host's sentence-transformers pooling, whose files are in this folder"
            if host["pooling_files"]
            else "the platform's default: the host has no pooling files"
        )
        norm = ", then L2 normalisation" if host["normalize"] else ""
        lines += [
            f"Sentence embeddings: {host['pooling']} pooling of `last_hidden_state` over real "
            f"tokens{norm} ({source}).",
            "",
        ]
    return lines


def model_card(info: Mapping[str, Any]) -> str:
    """The card's text from the export record ``info`` (what ``export.json`` holds)."""
    host, params = info["host"], info["params"]
    lines = [
        f"# {Path(host['base']).name} grafted with `{info['plan']['name']}`",
        "",
        f"A `{host['architecture']}` ({host['family']} family) whose operators were replaced "
        "by efficient ones from `search_spaces.ops` and distilled from the original, by "
        "`python -m grafting.graft`; exported by `python -m grafting.export`.",
        "",
        "## Host",
        "",
        f"- base: `{host['base']}` ({host['model_type']}, {host['layers']} layers, hidden size "
        f"{host['hidden_size']}, vocabulary {host['vocab_size']})",
        f"- parameters: host {_count(params.get('host'))}, grafted {_count(params['grafted'])}",
        "",
        "## Plan",
        "",
        "```yaml",
        yaml.safe_dump(info["plan"], sort_keys=False).rstrip(),
        "```",
        "",
        *grafted_lines(info),
        "",
        "## Numbers from the graft (`report.json`)",
        "",
        *report_lines(info.get("report"), info.get("graft")),
        "",
        "## ONNX (`model.onnx`)",
        "",
        *onnx_lines(info.get("onnx")),
        "",
        "## How to load",
        "",
        *load_lines(info),
        "`reference.safetensors` holds inputs and the outputs PyTorch gave for them, to check a "
        "reloaded model."
        if info.get("reference")
        else "",
        "",
        "## How it was obtained",
        "",
        f"- graft folder: `{info['run']}` (its resolved configuration is `graft_config.yaml`)",
        f"- export command: `{info['command']}`",
        f"- torch {info['versions']['torch']}, transformers {info['versions']['transformers']}",
        "",
        "Files: " + ", ".join(f"`{f}`" for f in info["files"]),
        "",
    ]
    return "\n".join(lines)


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"
