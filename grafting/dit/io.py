"""Saving and loading DiT models, safely (safetensors, or ``torch.load(weights_only=True)``).

A model folder holds ``config.json`` (``DiTConfig.to_dict()``, with ``"model_type": "dit"``) and
``model.safetensors``. ``load_dit`` also reads an original DiT checkpoint file (``.pt``/``.pth``:
a raw state dict, or a dict with an ``ema`` or ``model`` key as the original ``train.py`` writes),
inferring the architecture from the tensor shapes; the number of heads, which no shape shows,
comes from the preset with the same depth, width and patch (or ``preset=``/``num_heads=``).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common.atomic import atomic_dir
from grafting.dit.model import PRESETS, DiT, DiTConfig

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def write_dit(model: DiT, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into the existing ``folder`` (not atomic:
    callers build ``folder`` inside ``common.atomic.atomic_dir``)."""
    folder = Path(folder)
    (folder / CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "model_type": "dit"})
    return folder


def save_dit(model: DiT, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the model folder ``out`` atomically; a non-empty ``out`` is refused unless
    ``overwrite``, and a failed save leaves it as it was."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    with atomic_dir(out) as tmp:
        write_dit(model, tmp)
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: safetensors, or a torch file read with
    ``weights_only=True`` (the original train.py's ``args`` Namespace is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DiT checkpoint file at {str(path)!r}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read DiT checkpoint {str(path)!r}: {first}") from None
    if isinstance(data, dict):
        for key in ("ema", "model"):  # the original train.py: {"model", "ema", "opt", "args"}
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(
            f"DiT checkpoint {str(path)!r} is not a state dict (nor a dict with 'ema' or 'model')"
        )
    return data


def infer_config(state: dict[str, torch.Tensor], **known: Any) -> DiTConfig:
    """The ``DiTConfig`` that the shapes of ``state`` imply; ``known`` fields take precedence.
    The null class row is assumed (``class_dropout_prob=0.1``, as every released DiT) unless
    ``class_dropout_prob=0`` is given."""
    need = ("x_embedder.proj.weight", "pos_embed", "y_embedder.embedding_table.weight")
    need += ("final_layer.linear.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"not a DiT state dict: it has no {', '.join(missing)}")
    hidden, in_ch, patch, _ = state["x_embedder.proj.weight"].shape
    grid = round(state["pos_embed"].shape[1] ** 0.5)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    dropout = float(known.get("class_dropout_prob", 0.1))
    out_ch = state["final_layer.linear.weight"].shape[0] // patch**2
    fields: dict[str, Any] = {
        "input_size": grid * patch,
        "patch_size": patch,
        "in_channels": in_ch,
        "hidden_size": hidden,
        "depth": depth,
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
        "class_dropout_prob": dropout,
        "num_classes": state["y_embedder.embedding_table.weight"].shape[0] - int(dropout > 0),
        "learn_sigma": out_ch == 2 * in_ch,
    }
    fields.update(known)
    if "num_heads" not in fields:
        arch = {"depth": depth, "hidden_size": hidden, "patch_size": patch}
        match = [p for p in PRESETS.values() if arch.items() <= p.items()]
        if not match:
            raise ValueError(
                f"cannot infer num_heads of a DiT with {depth=}, {hidden=}, {patch=} (no preset "
                "matches): pass preset= or num_heads="
            )
        fields["num_heads"] = match[0]["num_heads"]
    return DiTConfig(**fields)


def load_state(model: DiT, state: dict[str, torch.Tensor], source: str) -> DiT:
    """Copy ``state`` into ``model`` after checking key sets and shapes (ValueError, one line)."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit {_describe(model.config)}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ValueError(
                f"{source} does not fit {_describe(model.config)}: {k} has shape "
                f"{tuple(state[k].shape)}, the model expects {tuple(v.shape)}"
            )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model


def load_dit(path: str | Path, *, preset: str | None = None, **overrides: Any) -> DiT:
    """A DiT in eval mode from a model folder (``config.json`` + ``model.safetensors``) or a
    checkpoint file (``.pt``/``.pth``/``.safetensors``; its config from ``preset`` and
    ``overrides`` where given, else inferred from the shapes)."""
    path = Path(path)
    if path.is_dir():
        if preset is not None or overrides:
            raise ValueError(f"{str(path)!r} is a model folder: its config.json sets the model")
        for name in (CONFIG, WEIGHTS):
            if not (path / name).is_file():
                raise FileNotFoundError(f"DiT folder {str(path)!r} has no {name}")
        try:
            config = DiTConfig.from_dict(json.loads((path / CONFIG).read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"cannot read {str(path / CONFIG)!r}: {e}") from None
        state = read_state_dict(path / WEIGHTS)
    elif path.is_file():
        state = read_state_dict(path)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown DiT preset {preset!r}; available: {', '.join(PRESETS)}")
            overrides = {**PRESETS[preset], **overrides}
        config = infer_config(state, **overrides)
    else:
        raise FileNotFoundError(f"no DiT model folder or checkpoint file at {str(path)!r}")
    return load_state(DiT(config), state, repr(str(path))).eval()


def _describe(config: DiTConfig) -> str:
    name = config.preset_name()
    return f"{name} ({config})" if name else str(config)
