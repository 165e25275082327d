"""Saving a grafted model and ``load(DIR)``: a ``transformers`` model again, in a fresh process.

A grafted directory holds ``grafted.safetensors`` (every weight), ``config.json`` (the host's
Hugging Face config), ``plan.yaml``, the tokenizer (and sentence-transformers pooling files for
encoders), ``config.yaml`` (the resolved run config) and ``report.json``. ``load`` rebuilds the
host architecture from its config, re-applies the plan's surgery (structure only) and loads the
weights strictly, so the model has the host's forward signature and ``generate()``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_model, save_model
from torch import nn

from common.atomic import atomic_dir
from grafting.checkpoints import model_class, read_config
from grafting.families import get_family
from grafting.plan import GraftPlan, load_plan
from grafting.surgery import graft

WEIGHTS = "grafted.safetensors"
EXPORTED_WEIGHTS = "model.safetensors"  # the name in exports older than 2026-11-30
POOLING_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def save(
    out: Path,
    model: nn.Module,
    plan: GraftPlan,
    *,
    tokenizer: Any = None,
    host_path: Path | None = None,
    run_config: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    overwrite: bool = False,
    extra_files: list[Path] = (),
) -> Path:
    """Write a grafted model to ``out``, atomically: files go to a temporary sibling directory
    that replaces ``out`` only once complete, so a failed save leaves nothing half-written and
    an existing ``out`` (``overwrite=True``) as it was."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    with atomic_dir(out) as tmp:
        save_model(model, str(tmp / WEIGHTS))  # handles tied weights (lm_head = embeddings)
        if hasattr(model.config, "save_pretrained"):
            model.config.save_pretrained(tmp)
        else:  # a DiT: its own config dataclass
            (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        for f in extra_files:  # e.g. a DiT graft's sample grids
            shutil.copy(f, tmp / f.name)
        (tmp / "plan.yaml").write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if host_path is not None:
            for name in POOLING_FILES:
                if (host_path / name).is_file():
                    shutil.copy(host_path / name, tmp / name)
            for sub in host_path.glob("1_Pooling"):
                shutil.copytree(sub, tmp / sub.name)
        if run_config is not None:
            (tmp / "config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))
        if report is not None:
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


def load(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The grafted ``transformers`` model saved in ``path`` (eval mode): a graft folder, or a
    ``python -m grafting.export`` folder (``model.safetensors``)."""
    path = Path(path)
    weights = next((path / n for n in (WEIGHTS, EXPORTED_WEIGHTS) if (path / n).is_file()), None)
    if weights is None or not (path / "plan.yaml").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a grafted model (no {WEIGHTS} / plan.yaml)")
    model = new_dit(path) or host_from_config(path, dtype)
    plan = load_plan(path / "plan.yaml")
    if plan.restructure:
        from grafting.dit.parallel import halve_depth

        halve_depth(model, init=False)
    graft(model, get_family(model.config), plan, init=False)
    missing, unexpected = load_model(model, str(weights), strict=True)
    return model.eval()


def host_from_config(path: Path, dtype: torch.dtype) -> nn.Module:
    """A freshly initialised ``transformers`` model of the host architecture in ``path``."""
    config = read_config(path)
    family = get_family(config)
    return model_class(family).from_config(config, attn_implementation="sdpa", dtype=dtype)


def new_dit(path: Path) -> nn.Module | None:
    """A freshly initialised DiT of the architecture in ``path/config.json``, or None when that
    is not a DiT config."""
    from grafting.dit.graft import is_dit
    from grafting.dit.model import DiT, DiTConfig

    if not is_dit(path):
        return None
    return DiT(DiTConfig.from_dict(json.loads((path / "config.json").read_text())))
