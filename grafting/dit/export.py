"""``python -m grafting.export run=<DiT graft> out=DIR`` for DiT grafts (``grafting.export`` hands
them over): the graft folder's files (weights as ``grafted.safetensors``, the sample grids, plan,
report), ``model.onnx`` (``forward(x, t, y)`` at a fixed batch, checked against PyTorch with
onnxruntime), ``reference.safetensors`` (inputs and PyTorch's outputs), ``export.json`` and a
short ``README.md``. ``grafting.load(DIR)`` rebuilds the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.export_folder import write_record, write_reference
from common.model_card import card_data, render_card
from grafting.report import count_params

ONNX_TOLERANCE = 1e-3


def inputs(model: nn.Module, batch: int, seed: int) -> dict[str, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(batch, c.in_channels, c.input_size, c.input_size, generator=g),
        "t": torch.randint(0, 1000, (batch,), generator=g),
        "y": torch.randint(0, c.num_classes, (batch,), generator=g),
    }


def write_onnx(model: nn.Module, path: Path, batch: int, seed: int) -> dict[str, Any]:
    """The ONNX program of ``model(x, t, y)`` at ``batch`` images, and its largest difference
    from PyTorch over two input draws; ``ValueError`` if the export fails or disagrees."""
    from common.portable import export_onnx, first_line, onnx_max_abs_diff

    example = inputs(model, batch, seed)
    try:
        export_onnx(model, path, tuple(example.values()))
    except Exception as e:  # noqa: BLE001  (exporters raise many types)
        raise ValueError(f"ONNX export of the DiT failed: {first_line(e)}") from None
    worst = onnx_max_abs_diff(path, model, [inputs(model, batch, s) for s in (seed, seed + 1)])
    if not worst <= ONNX_TOLERANCE:
        raise ValueError(f"onnxruntime disagrees with PyTorch: max abs diff {worst:.3g}")
    return {"file": path.name, "shape": [batch], "onnx_max_abs_diff": worst}


def write_folder(dest: Path, run: Path, model: nn.Module, cfg: Any, command: str) -> dict[str, Any]:
    """Write every file of a DiT export into ``dest`` and return the record."""
    from grafting.export import copy_files
    from grafting.plan import load_plan

    copy_files(run, dest)
    report = (
        json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    )
    plan = load_plan(run / "plan.yaml")
    batch, seed = int(cfg.onnx.shape[0]), int(cfg.seed)
    onnx = write_onnx(model, dest / "model.onnx", batch, seed) if cfg.onnx.enabled else None
    ref = inputs(model, batch, seed + 1)
    write_reference(dest, model, ref)
    info = {
        "run": str(run.resolve()),
        "command": command,
        "host": {"base": report.get("base", run.name), "family": "dit", **model.config.to_dict()},
        "plan": plan.to_dict(),
        "grafted": report.get("grafted", []),
        "params": {**report.get("params", {}), "grafted": count_params(model)},
        "onnx": onnx,
        "reference": {"inputs": ["x", "t", "y"], "output": "epsilon and variance channels"},
        "report": report,
    }
    return write_record(dest, info, card)


CARD = """\
# {{ host.base }} grafted with {{ plan.name }}

A DiT ({{ host.depth }} blocks, width {{ host.hidden_size }}) with \
{{ grafted | join(", ") or "no slot" }} replaced; load it with `grafting.load(this_folder)`: \
`model(x, t, y)`.

{% if quality %}
{{ table(["samples", "Fréchet", "conditional accuracy"], quality) }}

Teacher (left) and grafted (right) samples:

![](side_by_side.png)
{% endif %}
"""


def card(info: dict[str, Any]) -> str:
    """A short model card: what was grafted where, and what the graft report measured; the
    front matter names the host as ``base_model`` and holds the sample quality."""
    q = (info["report"] or {}).get("quality", {})
    names = ("heldout_real", "teacher", "grafted")
    graft = {"plan": info["plan"]["name"], "grafted": list(info["grafted"])}
    if q:
        graft["quality"] = {n: {k: float(q[n][k]) for k in ("frechet", "accuracy")} for n in names}
    data = card_data(
        model_name=f"{Path(str(info['host']['base'])).name}-grafted-{info['plan']['name']}",
        base_model=str(info["host"]["base"]),
        tags=["grafted", "dit", "diffusion", "efficient-attention", "distillation"],
        graft=graft,
    )
    rows = [[n, f"{q[n]['frechet']:.2f}", f"{q[n]['accuracy']:.3f}"] for n in names] if q else []
    return render_card(
        data, CARD, host=info["host"], plan=info["plan"], grafted=info["grafted"], quality=rows
    )
