"""The ``README.md`` model card of an exported architecture (``python -m nas.export``).

It keeps two sets of numbers apart: the search-time ones, copied verbatim from the study's
``pareto.csv`` row (inherited weights, predicted or measured latency as the search recorded it),
and the ones measured on the exported model itself (after fine-tuning or retraining). The front
matter (``common.model_card``) carries the Hub metadata: tags, the task, and the validation and
test metric as evaluation results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.model_card import card_data, eval_result, render_card
from search_spaces import Arch

PIPELINES = {
    "lm": "text-generation",
    "seq_cls": "text-classification",
    "image_cls": "image-classification",
}

TEMPLATE = """\
# {{ info.space }} / trial {{ info.trial }} — `{{ arch.signature }}`

Architecture found by a search over the `{{ info.space }}` space on the task \
`{{ info.task.name }}` ({{ metric }}, {{ info.direction }}), exported by `python -m nas.export`.

## Architecture

- dim {{ arch.dim }}, head_dim {{ arch.head_dim }}, depth {{ arch.depth }} \
({{ arch.layers | length }} distinct layers), {{ arch.block }} blocks, \
{{ arch.norm_placement }}-norm, positions: {{ arch.pos_embedding }}
- head: {{ head }}
{% if loop_spec %}
- loop: begin {{ loop_spec.begin }}, middle {{ loop_spec.middle }} x {{ loop_spec.repeats }}, \
end {{ loop_spec.end }}, streams {{ loop_spec.streams }}
{% endif %}

{{ table(["layer", "token mixer", "params", "channel mixer", "params", "norm"], layers) }}

## Search-time numbers (from `pareto.csv`, verbatim)

{% if row and row.trial | int == info.trial %}
{{ table(row.keys(), [row.values()]) }}
{% elif row %}
Trial {{ info.trial }} evaluated the same architecture as trial {{ row.trial }}, which stands \
for it on the Pareto front (one trial per architecture); that trial's row:

{{ table(row.keys(), [row.values()]) }}

Trial {{ info.trial }}'s own numbers, from the study: {{ info.search_attrs }}
{% elif info.get("pareto_csv", True) %}
Trial {{ info.trial }} is not on the search's Pareto front (no row in `pareto.csv`); from the \
study: {{ info.search_attrs }}
{% else %}
The search run has no `pareto.csv`; trial {{ info.trial }}'s numbers from the study: \
{{ info.search_attrs }}
{% endif %}

Search-time numbers use weights inherited from the supernet and the search's own latency \
estimate; the numbers below are measured on this exported model.

## This model

- weights: {{ info.weights }}
- validation {{ metric }}: {{ after.val_metric | fmt(".6g") }}; test {{ metric }}: \
{{ after.test_metric | fmt(".6g") }}
- latency: median {{ lat.median_ms | fmt(".4g") }} ms (IQR {{ lat.iqr_ms | fmt(".3g") }} ms, \
{{ lat.runs }} runs) at input shape {{ lat.shape | list }}, measured with `nas.latency.measure` \
on {{ lat.fingerprint }}
- parameters: {{ info.params | fmt(",") }}
- FLOPs: {{ info.flops | fmt(",") }} per input of {{ info.flops_tokens }} tokens (analytic \
per-operator formulas, `Model.flops`; `torch.utils.flop_counter` misses attention on CPU)
- ONNX (`model.onnx`, opset {{ port.onnx_opset }}): traced at input shape {{ shape }} \
({{ port.dtype }}); dynamic axes: {{ dyn }}; max abs difference to PyTorch with onnxruntime: \
{{ port.onnx_max_abs_diff | fmt(".3g") }} over shapes \
{{ port.onnx_checked_shapes | map("list") | list }}
- torch.export (`model.pt2`): max abs difference to PyTorch {{ port.pt2_max_abs_diff | fmt(".3g") }}
{% for note in port.notes %}
- note: {{ note }}
{% endfor %}

## How it was obtained

- study `{{ info.study_name }}` in `{{ info.storage }}`, trial {{ info.trial }}; supernet \
`{{ info.supernet }}`
- search run: {{ info.get("run_dir") or "-" }}; git commit {{ info.get("git_commit") or "-" }}
- export command: `{{ info.command }}`

## How to load

With the platform (`pip install` this repository; needs neither `supernet` nor `nas`):

```python
{% for module in info.get("plugins") or [] %}
import {{ module }}  # defines operators of this architecture: import it first
{% endfor %}
from search_spaces import load_exported
model = load_exported('.')  # this folder: arch.yaml + model.safetensors, eval mode
outputs = model(inputs)  # token ids (B, L) or images (B, C, H, W)
```

With plain PyTorch (no platform installed):

```python
import torch
model = torch.export.load('model.pt2').module()
outputs = model(inputs)  # inputs of shape {{ shape }}\
{{ (", dynamic axes: " ~ dyn) if port.dynamic_axes else "" }}
```

{% if arch.head.kind == "image_cls" %}
With timm (an image classifier; the name is registered in the current process):

```python
import timm
from search_spaces.exported import register_timm
model = timm.create_model(register_timm('.'), pretrained=True)  # weights of this folder
```

{% endif %}
With onnxruntime:

```python
import onnxruntime as ort
session = ort.InferenceSession('model.onnx')
(outputs,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
```

`reference.safetensors` holds an input and the outputs PyTorch gave for it, to check a \
reloaded model. The exported programs take no `padding_mask` (every token is real).

Files: {{ files }}
"""


def _params(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name") or "-"


def _layer_rows(arch: Arch) -> list[list[Any]]:
    """One table row per distinct layer: mixer, channel mixer (each with its hyperparameters), norm."""
    rows = []
    for i, layer in enumerate(arch.to_dict()["layers"]):
        m, c, n = layer["mixer"], layer["channel"], layer["norm"]
        rows.append([i, m["name"], _params(m), c["name"], _params(c), n["name"]])
    return rows


def model_card(info: Mapping[str, Any]) -> str:
    """The card's text from the export record ``info`` (what ``export.json`` holds)."""
    arch = Arch.from_dict(info["arch"])
    port, metric = info["portable"], info["metric"]
    dyn = ", ".join(f"{a} ({n})" for a, n in port["dynamic_axes"].items()) or "none (fixed shape)"
    if "length" in port["dynamic_axes"].values():
        dyn += f", length at most head.max_len = {arch.max_len}"
    after, task = info["after"], info["task"]["name"]
    pipeline = PIPELINES.get(arch.head.kind)
    data = card_data(
        model_name=f"{info['space']}-trial-{info['trial']}-{arch.signature}",
        tags=["nas", "efficient-attention", "onnx", info["space"], task],
        pipeline_tag=pipeline,
        eval_results=[
            eval_result(
                pipeline or arch.head.kind,
                task,
                metric,
                float(after[f"{split}_metric"]),
                dataset_split=split,
            )
            for split in ("val", "test")
        ],
        nas={
            "space": info["space"],
            "trial": info["trial"],
            "signature": arch.signature,
            "direction": info["direction"],
            "search_values": info.get("search_values"),
        },
    )
    head = ", ".join(f"{k}={v}" for k, v in arch.to_dict()["head"].items() if v or k == "kind")
    return render_card(
        data,
        TEMPLATE,
        info=info,
        arch=arch,
        metric=metric,
        after=after,
        lat=info["latency"],
        port=port,
        dyn=dyn,
        shape=list(port["shape"]),
        head=head,
        loop_spec=arch.loop_spec if arch.to_dict().get("loop") else None,
        layers=_layer_rows(arch),
        row=info.get("search_row"),
        files=", ".join(f"`{f}`" for f in info["files"]),
    )
