"""What both export commands (``python -m nas.export``, ``python -m grafting.export``) do around
their own work: check the ``out=`` folder, write the reference tensors, write the record and its
model card. What else goes into the folder (weights, ONNX, a task's or a tokenizer's files) is each
command's own; both build the folder inside ``common.atomic.atomic_dir(out)``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

REFERENCE, RECORD, CARD = "reference.safetensors", "export.json", "README.md"


def check_out(
    out: Any,
    *,
    overwrite: bool,
    source: str | os.PathLike | None = None,
    source_name: str = "source folder",
    error: type[Exception] = ValueError,
) -> Path:
    """The export folder ``out=`` names (``~`` expanded), checked before any work: given, not
    ``source`` (the folder the export reads, which replacing ``out`` would delete) and not
    existing unless ``overwrite``. Raises ``error`` with one line naming the setting (a command
    passes its ``UsageError``, which ``common`` cannot import)."""
    if not out:
        raise error("choose the export folder with out=DIR")
    path = Path(str(out)).expanduser()
    if source and path.resolve() == Path(source).expanduser().resolve():
        raise error(f"out={out} is the {source_name} itself; choose another folder")
    if path.exists() and not overwrite:
        raise error(f"out={out} already exists; choose another folder or add overwrite=true")
    return path


@torch.no_grad()
def write_reference(
    dest: Path, forward: Callable[..., torch.Tensor], inputs: Mapping[str, torch.Tensor]
) -> None:
    """``dest/reference.safetensors``: ``inputs`` and ``outputs``, what ``forward(**inputs)``
    returns in PyTorch, for checking a reloaded or converted model."""
    outputs = forward(**inputs)
    save_file({**inputs, "outputs": outputs.contiguous()}, str(dest / REFERENCE))


def write_record(
    dest: Path, info: dict[str, Any], card: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """``dest/export.json`` (``info`` with ``files``: every file of the finished folder) and
    ``dest/README.md`` (``card(info)``); returns ``info``."""
    info["files"] = sorted(p.name for p in dest.iterdir()) + [RECORD, CARD]
    (dest / RECORD).write_text(json.dumps(info, indent=2, default=str) + "\n")
    (dest / CARD).write_text(card(info))
    return info
