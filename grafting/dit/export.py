"""``python -m grafting.export run=<DiT graft> out=DIR`` for DiT grafts (``grafting.export`` hands
them over): the graft folder's files (weights as ``grafted.safetensors``, the sample grids, plan,
report), ``model.onnx`` (``forward(x, t, y)`` at a fixed batch, checked against PyTorch with
onnxruntime), ``reference.safetensors`` (inputs and PyTorch's outputs), ``export.json`` and a
short ``README.md``. ``grafting.load(DIR)`` rebuilds the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

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
    import onnxruntime as ort

    example = inputs(model, batch, seed)
    try:
        program = torch.onnx.export(model, tuple(example.values()), dynamo=True, verbose=False)
        program.save(str(path))
    except Exception as e:  # noqa: BLE001  (exporters raise many types)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"ONNX export of the DiT failed: {first}") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst = 0.0
    with torch.no_grad():
        for s in (seed, seed + 1):
            x = inputs(model, batch, s)
            (got,) = session.run(None, dict(zip(names, (v.numpy() for v in x.values()), strict=False)))  # fmt: skip
            worst = max(worst, float(np.abs(got - model(**x).numpy()).max()))
    if not worst <= ONNX_TOLERANCE:
        raise ValueError(f"onnxruntime disagrees with PyTorch: max abs diff {worst:.3g}")
    return {"file": path.name, "shape": [batch], "onnx_max_abs_diff": worst}


def write_folder(dest: Path, run: Path, model: nn.Module, cfg: Any, command: str) -> dict[str, Any]:  # fmt: skip
    """Write every file of a DiT export into ``dest`` and return the record."""
    from grafting.export import REFERENCE, copy_files
    from grafting.plan import load_plan

    copy_files(run, dest)
    report = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}  # fmt: skip
    plan = load_plan(run / "plan.yaml")
    batch, seed = int(cfg.onnx.shape[0]), int(cfg.seed)
    onnx = write_onnx(model, dest / "model.onnx", batch, seed) if cfg.onnx.enabled else None
    ref = inputs(model, batch, seed + 1)
    with torch.no_grad():
        ref["outputs"] = model(**ref).contiguous()
    save_file(ref, str(dest / REFERENCE))
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
    info["files"] = sorted(p.name for p in dest.iterdir()) + ["export.json", "README.md"]
    (dest / "export.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    (dest / "README.md").write_text(card(info))
    return info


def card(info: dict[str, Any]) -> str:
    """A short model card: what was grafted where, and what the graft report measured."""
    q = (info["report"] or {}).get("quality", {})
    lines = [
        f"# {info['host']['base']} grafted with {info['plan']['name']}",
        "",
        f"A DiT ({info['host']['depth']} blocks, width {info['host']['hidden_size']}) with "
        f"{', '.join(info['grafted']) or 'no slot'} replaced; load it with "
        "`grafting.load(this_folder)`: `model(x, t, y)`.",
        "",
    ]
    if q:
        lines += ["| samples | Fréchet | conditional accuracy |", "|---|---|---|"]
        for name in ("heldout_real", "teacher", "grafted"):
            lines.append(f"| {name} | {q[name]['frechet']:.2f} | {q[name]['accuracy']:.3f} |")
        lines += ["", "Teacher (left) and grafted (right) samples:", "", "![](side_by_side.png)"]
    return "\n".join(lines) + "\n"
