"""Saving and loading a trained supernet: weights in safetensors (never pickled), the space and
head beside them in JSON, so a supernet file set can be reloaded anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common.atomic import atomic_path
from search_spaces import HeadSpec
from search_spaces.errors import BadFileError
from search_spaces.space import SearchSpace
from supernet.supernet import Supernet

WEIGHTS, META = "supernet.safetensors", "supernet.json"


def save_supernet(supernet: Supernet, directory: str | os.PathLike, **extra: Any) -> Path:
    """Write ``supernet.safetensors`` and ``supernet.json`` into ``directory`` (atomically:
    both files are renamed into place only once both are written, so a failed save never
    leaves a half-written pair)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "space": supernet.space.data,
        "space_source": supernet.space.source,
        "head": supernet.head_spec.to_dict(),
        **extra,
    }
    tensors = {k: v.detach().contiguous() for k, v in supernet.weights.items()}
    with atomic_path(directory / WEIGHTS) as tmp_w, atomic_path(directory / META) as tmp_m:
        save_file(tensors, str(tmp_w))
        tmp_m.write_text(json.dumps(meta, indent=2, default=str))
    return directory


def read_meta(path: Path) -> dict[str, Any]:
    """``supernet.json``: a mapping with the ``space`` and ``head`` a supernet was built with."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not {"space", "head"} <= set(meta):
        raise BadFileError(f"{path}: expected a mapping with `space` and `head`")
    return meta


def load_supernet(directory: str | os.PathLike) -> tuple[Supernet, dict[str, Any]]:
    """The supernet saved in ``directory`` and its metadata; ``BadFileError`` (a ``ValueError``)
    naming the file when one is damaged or does not match the other."""
    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS, directory / META
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no saved supernet in {directory} (expected {WEIGHTS} and {META})")
    meta = read_meta(meta_path)
    space = SearchSpace(meta["space"], source=meta.get("space_source", str(meta_path)))
    try:
        head = HeadSpec(**meta["head"])
    except (TypeError, ValueError) as e:
        raise BadFileError(f"{meta_path}: invalid `head` ({e})") from None
    supernet = Supernet(space, head=head)
    try:
        state = load_file(str(weights))
    except SafetensorError as e:
        raise BadFileError(f"{weights}: not a readable safetensors file ({e})") from None
    missing, unexpected = supernet.weights.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadFileError(
            f"{weights}: does not match its space (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return supernet, meta
