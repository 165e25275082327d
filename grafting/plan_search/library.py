"""The graft library: every candidate of a graft space trained once per layer by stage 1, on one
capture of the host's activations, and saved; any plan is then assembled from the pieces without
more training (a weight-sharing supernet for grafting, as in Puzzle / PostNAS).

A library folder holds ``pieces.safetensors`` (``<layer>.<slot>.<candidate>/<parameter>``) and
``library.json`` (host, space and its signature, stage-1 settings, each piece's last loss).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from common.atomic import atomic_dir
from grafting import stage1
from grafting.checkpoints import Host
from grafting.plan import GraftPlan
from grafting.plan_search.space import Choices, GraftSpace
from grafting.surgery import graft

PIECES = "pieces.safetensors"
META = "library.json"
PieceKey = tuple[int, str, str]  # (layer, slot, candidate)


@dataclasses.dataclass
class Library:
    pieces: dict[PieceKey, dict[str, torch.Tensor]]  # each operator's state dict
    meta: dict[str, Any]


def build(
    host: Host,
    space: GraftSpace,
    calibration: list[dict[str, torch.Tensor]],
    cfg: dict[str, Any],
    *,
    progress: bool = True,
    seed: int = 0,
) -> Library:
    """Stage 1 for every (layer, slot, candidate) of ``space`` (``cfg``: the ``stage1`` settings):
    one capture of the host, one training pass in which every piece regresses its own slot."""
    teacher, family = host.model, host.family
    layers = space.layer_ids(family.num_layers(teacher))
    wrappers: dict[PieceKey, nn.Module] = {}
    for slot, cands in space.candidates.items():
        for cand, spec in cands.items():
            grafts = [{"layers": layers, slot: spec.to_dict()}]
            plan = GraftPlan.from_dict({"name": f"library-{slot}-{cand}", "grafts": grafts})
            student = copy.deepcopy(teacher)  # a home for this candidate's pieces in every layer
            for (i, s), wrapper in graft(student, family, plan).items():
                wrappers[(i, s, cand)] = wrapper.eval()
    result, seconds = stage1.run(teacher, family, wrappers, calibration, cfg, progress, seed)
    pieces = {key: _detached(w.op.state_dict()) for key, w in wrappers.items()}
    meta = {
        "host": str(host.path),
        "space": space.to_dict(),
        "signature": space.signature(family.num_layers(teacher)),
        "stage1": {k: v for k, v in cfg.items() if k != "cache_dir"},
        "calibration_batches": len(calibration),
        "seconds": seconds,
        "loss": result["loss"],
    }
    return Library(pieces, meta)


def _detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def save(library: Library, out: Path) -> None:
    """Write the library folder atomically (a failed save leaves the old one as it was)."""
    flat = {
        f"{i}.{slot}.{cand}/{name}": t
        for (i, slot, cand), state in library.pieces.items()
        for name, t in state.items()
    }
    with atomic_dir(Path(out)) as tmp:
        save_file(flat, str(tmp / PIECES))
        (tmp / META).write_text(json.dumps(library.meta, indent=2) + "\n")


def load(path: Path, space: GraftSpace, host: Host) -> Library:
    """A saved library; ``ValueError`` when it was built for another host or space."""
    path = Path(path)
    if not (path / PIECES).is_file() or not (path / META).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a graft library ({PIECES}, {META})")
    meta = json.loads((path / META).read_text())
    want = space.signature(host.family.num_layers(host.model))
    if meta.get("signature") != want or meta.get("host") != str(host.path):
        raise ValueError(
            f"graft library {str(path)!r} was built for host {meta.get('host')!r}, space "
            f"signature {meta.get('signature')}; this run has {str(host.path)!r}, {want} "
            "(use another out= or delete the library to rebuild it)"
        )
    pieces: dict[PieceKey, dict[str, torch.Tensor]] = {}
    for name, t in load_file(str(path / PIECES)).items():  # safetensors: no pickle
        key, param = name.split("/", 1)
        layer, slot, cand = key.split(".", 2)
        pieces.setdefault((int(layer), slot, cand), {})[param] = t
    return Library(pieces, meta)


def assemble(
    host: Host, space: GraftSpace, library: Library, choices: Choices, name: str
) -> tuple[nn.Module, dict[tuple[int, str], nn.Module], GraftPlan]:
    """A copy of the host with the plan of ``choices`` grafted in, every new operator loaded
    from its library piece (strict); returns (student, wrappers, plan)."""
    plan = space.plan(choices, name)
    student = copy.deepcopy(host.model)
    wrappers = graft(student, host.family, plan, init=False) if plan.groups else {}
    for (i, slot), wrapper in wrappers.items():
        key = (i, slot, choices[(i, slot)])
        if key not in library.pieces:
            raise ValueError(f"graft library has no piece for layer {i} {slot} {key[2]!r}")
        wrapper.op.load_state_dict(library.pieces[key])
    return student.eval(), wrappers, plan
