"""Graft plans: which layers get which operator in which slot (``mixer`` or ``mlp``).

A plan is data (``conf/graft/<name>.yaml`` or any YAML file)::

    name: hybrid_swa_linear_50
    grafts:                       # applied in order; a later entry overrides an earlier one
      - layers: odd               # int | [ints] | "2-5" | odd | even | all | {every: k, start: 0}
        mixer: {name: linear, feature_map: hedgehog}
        mlp: {name: mlp, host_fraction: 0.5}   # optional; host_fraction: share of the host width

Slot entries name an operator of ``search_spaces.ops`` and its hyperparameters; ``init:
pretrained`` (default) starts it from the host's weights where the maths allows, ``init: random``
does not. ``validate`` checks a plan against a loaded model before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grafting.families.base import SLOTS
from search_spaces.config_paths import read_config

INITS = ("pretrained", "random")
NAMED_SELECTORS = ("all", "odd", "even")
RESTRUCTURES = ("parallel_pairs",)  # DiT hosts: grafting.dit.parallel


@dataclasses.dataclass(frozen=True)
class SlotSpec:
    """One operator for one slot: registry name, hyperparameters, initialisation."""

    op: str
    hparams: Mapping[str, Any]
    init: str = "pretrained"
    host_fraction: float | None = None  # mlp width as a share of the host's

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SlotSpec:
        if not isinstance(data, Mapping) or "name" not in data:
            raise ValueError(f"{where} must be a mapping with an operator `name`, got {data!r}")
        data = dict(data)
        op, init = str(data.pop("name")), str(data.pop("init", "pretrained"))
        fraction = data.pop("host_fraction", None)
        if init not in INITS:
            raise ValueError(f"{where}.init must be one of {INITS}, but got {init!r}")
        if fraction is not None and not 0 < float(fraction) <= 1:
            raise ValueError(f"{where}.host_fraction must be in (0, 1], but got {fraction!r}")
        return cls(op, data, init, None if fraction is None else float(fraction))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.op, **self.hparams}
        if self.init != "pretrained":
            out["init"] = self.init
        if self.host_fraction is not None:
            out["host_fraction"] = self.host_fraction
        return out


@dataclasses.dataclass(frozen=True)
class GraftGroup:
    layers: Any
    slots: Mapping[str, SlotSpec]


@dataclasses.dataclass(frozen=True)
class GraftPlan:
    """A parsed plan; ``resolve(num_layers)`` gives ``{(layer, slot): SlotSpec}``."""

    name: str
    groups: tuple[GraftGroup, ...]
    source: str = "<dict>"
    restructure: str | None = None  # DiT hosts: "parallel_pairs" (grafting.dit.parallel)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> GraftPlan:
        if not isinstance(data, Mapping):
            raise ValueError(
                f"a graft plan must be a mapping, got {type(data).__name__} ({source})"
            )
        unknown = set(data) - {"name", "description", "grafts", "restructure"}
        if unknown:
            raise ValueError(f"unknown plan field {sorted(unknown)[0]!r} in {source}")
        restructure = data.get("restructure")
        if restructure is not None and restructure not in RESTRUCTURES:
            raise ValueError(
                f"plan `restructure` must be one of {RESTRUCTURES}, got {restructure!r} ({source})"
            )
        grafts = data.get("grafts", [] if restructure else None)
        if restructure and grafts:
            raise ValueError(f"a plan with `restructure` takes no `grafts` ({source})")
        if not isinstance(grafts, list) or not (grafts or restructure):
            raise ValueError(f"plan `grafts` must be a non-empty list ({source})")
        groups = []
        for i, entry in enumerate(grafts):
            where = f"grafts[{i}]"
            if not isinstance(entry, Mapping) or "layers" not in entry:
                raise ValueError(f"{where} must be a mapping with `layers` ({source})")
            extra = set(entry) - {"layers", *SLOTS}
            if extra:
                raise ValueError(
                    f"{where}: unknown slot {sorted(extra)[0]!r}; slots are {', '.join(SLOTS)}"
                )
            slots = {s: SlotSpec.from_dict(entry[s], f"{where}.{s}") for s in SLOTS if s in entry}
            if not slots:
                raise ValueError(f"{where} names no slot; give `mixer` and/or `mlp` ({source})")
            groups.append(GraftGroup(entry["layers"], slots))
        name = str(data.get("name", Path(source).stem))
        return cls(name, tuple(groups), source, restructure)

    def to_dict(self) -> dict[str, Any]:
        grafts = [
            {"layers": g.layers, **{s: spec.to_dict() for s, spec in g.slots.items()}}
            for g in self.groups
        ]
        if self.restructure:
            return {"name": self.name, "restructure": self.restructure}
        return {"name": self.name, "grafts": grafts}

    def resolve(self, num_layers: int) -> dict[tuple[int, str], SlotSpec]:
        """Every grafted (layer, slot), in layer order; raises for out-of-range layers."""
        out: dict[tuple[int, str], SlotSpec] = {}
        for i, group in enumerate(self.groups):
            for layer in select_layers(group.layers, num_layers, f"grafts[{i}].layers"):
                for slot, spec in group.slots.items():
                    out[(layer, slot)] = spec
        return dict(sorted(out.items(), key=lambda kv: (kv[0][0], SLOTS.index(kv[0][1]))))


def select_layers(selector: Any, num_layers: int, where: str = "layers") -> list[int]:
    """Layer indices named by ``selector`` (see the module docstring); negative ints count from
    the end. Raises ``ValueError`` naming ``where`` for anything out of range or malformed."""
    if isinstance(selector, str) and selector in NAMED_SELECTORS:
        start = {"all": 0, "even": 0, "odd": 1}[selector]
        return list(range(start, num_layers, 1 if selector == "all" else 2))
    if (
        isinstance(selector, Mapping)
        and set(selector) <= {"every", "start"}
        and "every" in selector
    ):
        every, start = int(selector["every"]), int(selector.get("start", 0))
        if every < 1 or not 0 <= start < num_layers:
            raise ValueError(
                f"{where}: need every >= 1 and 0 <= start < {num_layers}, got {selector}"
            )
        return list(range(start, num_layers, every))
    if isinstance(selector, str) and re.fullmatch(r"\s*-?\d+\s*-\s*-?\d+\s*", selector):
        a, b = (int(t) for t in re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", selector).groups())
        if b < a:
            raise ValueError(f"{where}: empty range {selector!r}")
        selector = list(range(a, b + 1))
    if isinstance(selector, bool):
        raise ValueError(f"{where}: invalid layer selector {selector!r}")
    if isinstance(selector, int):
        selector = [selector]
    if isinstance(selector, list | tuple) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in selector
    ):
        out = []
        for i in selector:
            if not -num_layers <= i < num_layers:
                raise ValueError(
                    f"{where}: layer {i} is out of range for a model with {num_layers} layers"
                )
            out.append(i % num_layers)
        return sorted(set(out))
    raise ValueError(
        f"{where}: invalid layer selector {selector!r}; use an int, a list, 'a-b', "
        f"{', '.join(NAMED_SELECTORS)} or {{every: k}}"
    )


def load_plan(name_or_path: str | Path | Mapping) -> GraftPlan:
    """A plan by name (``conf/graft/<name>.yaml``, user dirs first), path, or mapping."""
    if isinstance(name_or_path, Mapping):
        return GraftPlan.from_dict(name_or_path)
    data, path = read_config("graft", name_or_path, "graft plan")
    return GraftPlan.from_dict(data, str(path))
