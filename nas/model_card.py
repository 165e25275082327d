"""The ``README.md`` model card of an exported architecture (``python -m nas.export``).

It keeps two sets of numbers apart: the search-time ones, copied verbatim from the study's
``pareto.csv`` row (inherited weights, predicted or measured latency as the search recorded it),
and the ones measured on the exported model itself (after fine-tuning or retraining).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search_spaces import Arch


def _params(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name") or "-"


def arch_summary(arch: Arch) -> list[str]:
    """Markdown lines: the global settings and one table row per distinct layer."""
    d = arch.to_dict()
    head = ", ".join(f"{k}={v}" for k, v in d["head"].items() if v or k == "kind")
    loop = arch.loop_spec
    lines = [
        f"- dim {arch.dim}, head_dim {arch.head_dim}, depth {arch.depth} "
        f"({len(arch.layers)} distinct layers), {arch.block} blocks, {arch.norm_placement}-norm, "
        f"positions: {arch.pos_embedding}",
        f"- head: {head}",
    ]
    if d.get("loop"):
        lines.append(f"- loop: begin {loop.begin}, middle {loop.middle} x {loop.repeats}, end {loop.end}, streams {loop.streams}")  # fmt: skip
    lines += ["", "| layer | token mixer | params | channel mixer | params | norm |", "|---|---|---|---|---|---|"]  # fmt: skip
    for i, layer in enumerate(d["layers"]):
        m, c, n = layer["mixer"], layer["channel"], layer["norm"]
        lines.append(f"| {i} | {m['name']} | {_params(m)} | {c['name']} | {_params(c)} | {n['name']} |")  # fmt: skip
    return lines


def _table(row: Mapping[str, Any]) -> list[str]:
    return ["| " + " | ".join(row) + " |", "|" + "---|" * len(row), "| " + " | ".join(str(v) for v in row.values()) + " |"]  # fmt: skip


def _search_numbers(info: Mapping[str, Any]) -> list[str]:
    """The trial's ``pareto.csv`` row; for a repeat of an architecture on the front, the row of
    the trial that stands for it (the front keeps one trial per architecture, the fastest)."""
    n, row, attrs = info["trial"], info.get("search_row"), info["search_attrs"]
    if row and int(row["trial"]) == n:
        return _table(row)
    if row:
        return [
            f"Trial {n} evaluated the same architecture as trial {row['trial']}, which stands for "
            "it on the Pareto front (one trial per architecture); that trial's row:",
            "",
            *_table(row),
            "",
            f"Trial {n}'s own numbers, from the study: {attrs}",
        ]
    if info.get("pareto_csv", True):
        return [
            f"Trial {n} is not on the search's Pareto front (no row in `pareto.csv`); from the study: {attrs}"
        ]
    return [f"The search run has no `pareto.csv`; trial {n}'s numbers from the study: {attrs}"]


def _timm_lines() -> list[str]:
    return [
        "With timm (an image classifier; the name is registered in the current process):",
        "",
        "```python",
        "import timm",
        "from search_spaces.exported import register_timm",
        "model = timm.create_model(register_timm('.'), pretrained=True)  # weights of this folder",
        "```",
        "",
    ]


def model_card(info: Mapping[str, Any]) -> str:
    """The card's text from the export record ``info`` (what ``export.json`` holds)."""
    arch = Arch.from_dict(info["arch"])
    after, lat, port = info["after"], info["latency"], info["portable"]
    metric = info["metric"]
    dyn = ", ".join(f"{a} ({n})" for a, n in port["dynamic_axes"].items()) or "none (fixed shape)"
    if "length" in port["dynamic_axes"].values():
        dyn += f", length at most head.max_len = {arch.max_len}"
    shape = list(port["shape"])
    lines = [
        f"# {info['space']} / trial {info['trial']} — `{arch.signature}`",
        "",
        f"Architecture found by a search over the `{info['space']}` space on the task "
        f"`{info['task']['name']}` ({metric}, {info['direction']}), exported by `python -m nas.export`.",
        "",
        "## Architecture",
        "",
        *arch_summary(arch),
        "",
        "## Search-time numbers (from `pareto.csv`, verbatim)",
        "",
    ]
    lines += _search_numbers(info)
    lines += [
        "",
        "Search-time numbers use weights inherited from the supernet and the search's own "
        "latency estimate; the numbers below are measured on this exported model.",
        "",
        "## This model",
        "",
        f"- weights: {info['weights']}",
        f"- validation {metric}: {after['val_metric']:.6g}; test {metric}: {after['test_metric']:.6g}",
        f"- latency: median {lat['median_ms']:.4g} ms (IQR {lat['iqr_ms']:.3g} ms, {lat['runs']} runs) "
        f"at input shape {list(lat['shape'])}, measured with `nas.latency.measure` on "
        f"{lat['fingerprint']}",
        f"- parameters: {info['params']:,}",
        f"- FLOPs: {info['flops']:,} per input of {info['flops_tokens']} tokens (analytic per-operator "
        "formulas, `Model.flops`; `torch.utils.flop_counter` misses attention on CPU)",
        f"- ONNX (`model.onnx`, opset {port['onnx_opset']}): traced at input shape {shape} "
        f"({port['dtype']}); dynamic axes: {dyn}; max abs difference to PyTorch with onnxruntime: "
        f"{port['onnx_max_abs_diff']:.3g} over shapes {[list(s) for s in port['onnx_checked_shapes']]}",
        f"- torch.export (`model.pt2`): max abs difference to PyTorch {port['pt2_max_abs_diff']:.3g}",
        *[f"- note: {n}" for n in port["notes"]],
        "",
        "## How it was obtained",
        "",
        f"- study `{info['study_name']}` in `{info['storage']}`, trial {info['trial']}; supernet `{info['supernet']}`",
        f"- search run: {info.get('run_dir') or '-'}; git commit {info.get('git_commit') or '-'}",
        f"- export command: `{info['command']}`",
        "",
        "## How to load",
        "",
        "With the platform (`pip install` this repository; needs neither `supernet` nor `nas`):",
        "",
        "```python",
        "from search_spaces import load_exported",
        "model = load_exported('.')  # this folder: arch.yaml + model.safetensors, eval mode",
        "outputs = model(inputs)  # token ids (B, L) or images (B, C, H, W)",
        "```",
        "",
        "With plain PyTorch (no platform installed):",
        "",
        "```python",
        "import torch",
        "model = torch.export.load('model.pt2').module()",
        f"outputs = model(inputs)  # inputs of shape {shape}"
        + (", dynamic axes: " + dyn if port["dynamic_axes"] else ""),  # fmt: skip
        "```",
        "",
        *(_timm_lines() if arch.head.kind == "image_cls" else []),
        "With onnxruntime:",
        "",
        "```python",
        "import onnxruntime as ort",
        "session = ort.InferenceSession('model.onnx')",
        "(outputs,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})",
        "```",
        "",
        "`reference.safetensors` holds an input and the outputs PyTorch gave for it, to check a "
        "reloaded model. The exported programs take no `padding_mask` (every token is real).",
        "",
        "Files: " + ", ".join(f"`{f}`" for f in info["files"]),
        "",
    ]
    return "\n".join(lines)
