"""Saving and loading a trained supernet: weights in safetensors (never pickled), the space and
head beside them in JSON, so a supernet file set can be reloaded anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from common.atomic import atomic_path
from search_spaces import HeadSpec
from search_spaces.space import SearchSpace
from supernet.supernet import Supernet

WEIGHTS, META = "supernet.safetensors", "supernet.json"


def save_supernet(supernet: Supernet, directory: str | os.PathLike, **extra: Any) -> Path:
    """Write ``supernet.safetensors`` and ``supernet.json`` into ``directory`` (atomically:
    both files are renamed into place only once both are written, so a failed save never
    leaves a half-written pair)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"space": supernet.space.data, "space_source": supernet.space.source,
            "head": supernet.head_spec.to_dict(), **extra}  # fmt: skip
    tensors = {k: v.detach().contiguous() for k, v in supernet.weights.items()}
    with atomic_path(directory / WEIGHTS) as tmp_w, atomic_path(directory / META) as tmp_m:
        save_file(tensors, str(tmp_w))
        tmp_m.write_text(json.dumps(meta, indent=2, default=str))
    return directory


def load_supernet(directory: str | os.PathLike) -> tuple[Supernet, dict[str, Any]]:
    """The supernet saved in ``directory`` and its metadata."""
    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS, directory / META
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no saved supernet in {directory} (expected {WEIGHTS} and {META})")
    meta = json.loads(meta_path.read_text())
    space = SearchSpace(meta["space"], source=meta.get("space_source", str(meta_path)))
    supernet = Supernet(space, head=HeadSpec(**meta["head"]))
    state = load_file(str(weights))
    missing, unexpected = supernet.weights.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights}: does not match its space (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return supernet, meta
