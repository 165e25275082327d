"""The ``README.md`` model card of an exported grafted model (``python -m grafting.export``).

Every number comes from the export record (``export.json``): the host, the plan and each grafted
(layer, slot, operator), fidelity and latency copied from the graft's ``report.json`` (measured
by ``python -m grafting.graft`` against the host, side by side), and the ONNX check. The front
matter (``common.model_card``) carries the Hub metadata: ``base_model`` (the host), tags, the
fidelity numbers as evaluation results and the graft (plan, operators, speedups).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCardData

from common.model_card import card_data, eval_result, render_card

TEMPLATE = """\
# {{ name }} grafted with `{{ info.plan.name }}`

A `{{ host.architecture }}` ({{ host.family }} family) whose operators were replaced by \
efficient ones from `search_spaces.ops` and distilled from the original, by \
`python -m grafting.graft`; exported by `python -m grafting.export`.

## Host

- base: `{{ host.base }}` ({{ host.model_type }}, {{ host.layers }} layers, hidden size \
{{ host.hidden_size }}, vocabulary {{ host.vocab_size }})
- parameters: host {{ count(params.get("host")) }}, grafted {{ count(params.grafted) }}

## Plan

```yaml
{{ plan_yaml }}
```

{{ grafted_layers | length }} of {{ host.layers }} layers carry a grafted operator \
({{ grafted_layers | join(", ") }}); every other module is the host's own.

{{ table(["layer", "slot", "operator", "hyperparameters", "init"], grafted) }}

## Numbers from the graft (`report.json`)

{% if not report %}
The graft folder has no `report.json`: no fidelity or latency numbers.
{% else %}
### Fidelity to the host (held-out text)

{{ table(["text", "n"] + fidelity_keys, fidelity) }}

Encoders: cosine between host and grafted sentence embeddings and the Spearman correlation of \
their pairwise similarities; decoders: perplexities and the mean per-token KL(host || grafted).

### Latency (forward pass, host and grafted timed side by side)

Batch 1, random token ids, `torch.utils.benchmark` median (best of \
{{ timing.get("rounds", "?") }} rounds), {{ threads or "default" }} torch thread(s), on the \
machine that ran the graft; compare the ratio, not the absolute times.

{% if latency %}
{{ table(["seq_len", "host ms", "grafted ms", "speedup"], latency) }}
{% else %}
not measured
{% endif %}
{% if decode %}

Greedy decoding: {{ decode.host_tokens_per_s | fmt(".1f") }} (host) -> \
{{ decode.grafted_tokens_per_s | fmt(".1f") }} (grafted) tokens/s after a \
{{ decode.prompt_len }}-token prompt, {{ decode.new_tokens }} new tokens.
{% endif %}

Training: stage 1 (per-operator regression) {{ report.get("stage1", {}).get("steps", "?") }} \
steps, stage 2 (end-to-end distillation) {{ report.get("stage2", {}).get("steps", "?") }} steps.
{% endif %}

## ONNX (`model.onnx`)

{% if onnx is none %}
- ONNX: not exported (`onnx.enabled=false`)
{% else %}
- inputs `input_ids`, `attention_mask` (int64) traced at shape {{ onnx.shape | list }}; output \
`{{ onnx.output }}`
- dynamic axes: {{ dynamic or "none (fixed shape)" }}
- max abs difference to PyTorch with onnxruntime: {{ onnx.onnx_max_abs_diff | fmt(".3g") }} at \
real tokens, over shapes {{ onnx.checked_shapes | map("list") | list }} (with and without \
padding); opset {{ onnx.onnx_opset }}
{% for note in onnx.notes %}
- note: {{ note }}
{% endfor %}
{% endif %}

## How to load

With the platform (`pip install` this repository):

```python
{% for module in info.get("plugins") or [] %}
import {{ module }}  # defines operators of this graft: import it first
{% endfor %}
import grafting
from transformers import AutoTokenizer
model = grafting.load('.')  # this folder; a transformers model, eval mode
tokenizer = AutoTokenizer.from_pretrained('.')
batch = tokenizer(['A sentence.'], return_tensors='pt')
{{ output }} = model(**batch).{{ output }}{{ "  # and model.generate(...)" if host.causal else "" }}
```

{% if onnx is not none %}
With onnxruntime (no platform, no PyTorch):

```python
import onnxruntime as ort
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained('.')
batch = tokenizer(['A sentence.'], {{ padding }}, return_tensors='np')
session = ort.InferenceSession('model.onnx')
({{ output }},) = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
```

{% if "batch" not in onnx.ranges %}
The batch size is fixed at {{ onnx.shape[0] }}.

{% endif %}
{% endif %}
{% if not host.causal %}
Sentence embeddings: {{ host.pooling }} pooling of `last_hidden_state` over real \
tokens{{ ", then L2 normalisation" if host.normalize else "" }} ({{ "the host's sentence-transformers pooling, whose files are in this folder" \
if host.pooling_files else "the platform's default: the host has no pooling files" }}).

{% endif %}
{% if info.get("reference") %}
`reference.safetensors` holds inputs and the outputs PyTorch gave for them, to check a \
reloaded model.
{% else %}

{% endif %}

## How it was obtained

- graft folder: `{{ info.run }}` (its resolved configuration is `graft_config.yaml`)
- export command: `{{ info.command }}`
- torch {{ info.versions.torch }}, transformers {{ info.versions.transformers }}

Files: {{ files }}
"""


def _hparams(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items()) or "-"


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _padding(onnx: Mapping[str, Any] | None) -> str:
    """The tokenizer's padding argument for the ONNX model: to its fixed length if it has one."""
    if onnx is None or "length" in onnx["ranges"]:
        return "padding=True"
    return f"padding='max_length', max_length={onnx['shape'][1]}"


def _metadata(info: Mapping[str, Any], name: str) -> ModelCardData:
    """Hub metadata: the host as ``base_model``, tags, fidelity as evaluation results and the
    graft (plan, grafted slots, measured speedups) as a custom field."""
    host, report = info["host"], info.get("report") or {}
    pipeline = "text-generation" if host["causal"] else "feature-extraction"
    results = [
        eval_result(pipeline, text, metric, float(v), dataset_name=f"held-out {text} (fidelity)")
        for text, numbers in report.get("fidelity", {}).items()
        for metric, v in numbers.items()
        if metric != "n" and isinstance(v, int | float) and math.isfinite(v)
    ]
    ops = sorted({g["op"] for g in info["grafted"]})
    tags = [
        "grafted",
        "efficient-attention",
        "distillation",
        host["family"],
        host["model_type"],
        *ops,
    ]
    graft = {
        "plan": info["plan"]["name"],
        "grafted": [f"{g['layer']}.{g['slot']}:{g['op']}" for g in info["grafted"]],
        "speedup": {r["seq_len"]: round(float(r["speedup"]), 4) for r in report.get("latency", [])},
    }
    return card_data(
        model_name=f"{name}-grafted-{info['plan']['name']}",
        base_model=str(host["base"]),
        tags=tags + (["onnx"] if info.get("onnx") else []),
        pipeline_tag=pipeline,
        eval_results=results,
        graft=graft,
    )


def model_card(info: Mapping[str, Any]) -> str:
    """The card's text from the export record ``info`` (what ``export.json`` holds)."""
    host, onnx = info["host"], info.get("onnx")
    report, graft = info.get("report"), info.get("graft") or {}
    name = Path(host["base"]).name
    fid = (report or {}).get("fidelity", {})
    keys = sorted({k for v in fid.values() for k in v if k != "n"})
    ranges = (onnx or {}).get("ranges", {})
    return render_card(
        _metadata(info, name),
        TEMPLATE,
        info=info,
        name=name,
        host=host,
        params=info["params"],
        count=_count,
        plan_yaml=yaml.safe_dump(info["plan"], sort_keys=False).rstrip(),
        grafted=[
            [g["layer"], g["slot"], f"`{g['op']}`", _hparams(g["hparams"]), g["init"]]
            for g in info["grafted"]
        ],
        grafted_layers=[str(n) for n in sorted({g["layer"] for g in info["grafted"]})],
        report=report,
        decode=(report or {}).get("decode"),
        fidelity_keys=keys,
        fidelity=[[t, v.get("n", ""), *(v.get(k, "") for k in keys)] for t, v in fid.items()],
        timing=graft.get("report") or {},
        threads=graft.get("threads"),
        latency=[
            [r["seq_len"], r["host_ms"], r["grafted_ms"], r["speedup"]]
            for r in (report or {}).get("latency", [])
        ],
        onnx=onnx,
        dynamic=", ".join(
            f"{n} ({lo}..{hi if hi is not None else 'any'})" for n, (lo, hi) in ranges.items()
        ),
        output="logits" if host["causal"] else "last_hidden_state",
        padding=_padding(onnx),
        files=", ".join(f"`{f}`" for f in info["files"]),
    )
