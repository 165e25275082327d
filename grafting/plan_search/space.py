"""A graft space: for every searchable layer and slot, ``keep`` (the host's own module) or one
of a few candidate operators. Written as YAML (``conf/graft_spaces/<name>.yaml``)::

    name: minilm
    layers: all                  # the layers a plan may change (a plan layer selector)
    slots:                       # per slot, candidate name -> operator spec (as in a graft plan)
      mixer:
        linear: {name: linear, feature_map: hedgehog}
        swa: {name: sliding_window, window: 64, block_size: 32}
      mlp:
        narrow: {name: host, host_fraction: 0.5}
    constraints:                 # optional, per slot: how many layers are replaced (counts)
      mixer: {min_replaced: 3, max_replaced: 3}     # e.g. "exactly 50%" of 6 layers
    baselines:                   # hand-written plans, enqueued as trials: a plan name or a plan
      - linear_50
      - {name: swa_first_3, grafts: [{layers: 0-2, mixer: {name: sliding_window, window: 64, block_size: 32}}]}

A choice is ``{(layer, slot): candidate}``; ``plan(choices)`` turns it into a ``GraftPlan``
that ``python -m grafting.graft plan=FILE`` takes, ``choices_of(plan)`` does the reverse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grafting.families.base import SLOTS
from grafting.plan import GraftGroup, GraftPlan, SlotSpec, load_plan, select_layers
from search_spaces.config_paths import read_config

KEEP = "keep"
BOUNDS = ("min_replaced", "max_replaced")
Choices = dict[tuple[int, str], str]


@dataclasses.dataclass(frozen=True)
class GraftSpace:
    name: str
    layers: Any  # a plan layer selector
    candidates: Mapping[str, Mapping[str, SlotSpec]]  # slot -> candidate name -> spec
    constraints: Mapping[str, Mapping[str, int]]
    baselines: tuple[str | Mapping[str, Any], ...] = ()  # plan names or plans
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> GraftSpace:
        if not isinstance(data, Mapping):
            raise ValueError(f"a graft space must be a mapping ({source})")
        unknown = set(data) - {"name", "description", "layers", "slots", "constraints", "baselines"}
        if unknown:
            raise ValueError(f"unknown graft-space field {sorted(unknown)[0]!r} in {source}")
        slots = data.get("slots")
        if not isinstance(slots, Mapping) or not slots:
            raise ValueError(f"graft space `slots` must map a slot to candidates ({source})")
        candidates: dict[str, dict[str, SlotSpec]] = {}
        for slot, cands in slots.items():
            if slot not in SLOTS:
                raise ValueError(f"unknown slot {slot!r} in {source}; slots are {', '.join(SLOTS)}")
            if not isinstance(cands, Mapping) or not cands:
                raise ValueError(f"slots.{slot} must map candidate names to operators ({source})")
            if KEEP in cands:
                raise ValueError(f"slots.{slot}: {KEEP!r} is implicit, do not list it ({source})")
            candidates[slot] = {
                str(c): SlotSpec.from_dict(spec, f"slots.{slot}.{c}") for c, spec in cands.items()
            }
        constraints = dict(data.get("constraints") or {})
        for slot, bounds in constraints.items():
            if slot not in candidates or not isinstance(bounds, Mapping):
                raise ValueError(f"constraints.{slot}: not a searched slot of {source}")
            bad = set(bounds) - set(BOUNDS)
            if bad or not all(isinstance(v, int) and v >= 0 for v in bounds.values()):
                raise ValueError(
                    f"constraints.{slot} takes non-negative counts {BOUNDS}, got {dict(bounds)}"
                )
        baselines = data.get("baselines") or []
        if not isinstance(baselines, list) or not all(
            isinstance(b, str) or (isinstance(b, Mapping) and "name" in b) for b in baselines
        ):
            raise ValueError(
                f"graft space `baselines` must be a list of plan names or named plans ({source})"
            )
        name = str(data.get("name", Path(source).stem))
        return cls(
            name, data.get("layers", "all"), candidates, constraints, tuple(baselines), source
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "slots": {
                s: {c: spec.to_dict() for c, spec in cands.items()}
                for s, cands in self.candidates.items()
            },
            "constraints": {s: dict(b) for s, b in self.constraints.items()},
            "baselines": list(self.baselines),
        }

    def signature(self, num_layers: int) -> str:
        """A short hash of what the stage-1 pieces depend on: layers and candidates."""
        data = {"layers": self.layer_ids(num_layers), "slots": self.to_dict()["slots"]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def layer_ids(self, num_layers: int) -> list[int]:
        return select_layers(self.layers, num_layers, f"graft space {self.name!r} layers")

    def keys(self, num_layers: int) -> list[tuple[int, str]]:
        """Every searched (layer, slot), in layer order."""
        return [(i, s) for i in self.layer_ids(num_layers) for s in SLOTS if s in self.candidates]

    def options(self, slot: str) -> list[str]:
        return [KEEP, *self.candidates[slot]]

    def size(self, num_layers: int) -> int:
        n = 1
        for _, slot in self.keys(num_layers):
            n *= len(self.options(slot))
        return n

    def violation(self, choices: Choices) -> float:
        """How far ``choices`` are outside the constraints (0: feasible), in layers; a plan that
        replaces nothing (the host itself) is outside by one."""
        total = 0 if any(c != KEEP for c in choices.values()) else 1
        for slot, bounds in self.constraints.items():
            n = sum(1 for (_, s), c in choices.items() if s == slot and c != KEEP)
            total += max(0, bounds.get("min_replaced", 0) - n)
            total += max(0, n - bounds.get("max_replaced", n))
        return float(total)

    def plan(self, choices: Choices, name: str) -> GraftPlan:
        """The graft plan of ``choices``: one entry per changed layer (none if all are kept)."""
        groups = []
        for layer in sorted({i for i, _ in choices}):
            slots = {
                s: self.candidates[s][c]
                for (i, s), c in choices.items()
                if i == layer and c != KEEP
            }
            if slots:
                groups.append(GraftGroup([layer], slots))
        return GraftPlan(name, tuple(groups), "<search>")

    def choices_of(self, plan: GraftPlan, num_layers: int) -> Choices:
        """The choices that give ``plan``; ``ValueError`` when a grafted slot is not a candidate."""
        keys = self.keys(num_layers)
        choices = dict.fromkeys(keys, KEEP)
        for (i, slot), spec in plan.resolve(num_layers).items():
            if (i, slot) not in choices:
                raise ValueError(
                    f"plan {plan.name!r} grafts layer {i} {slot}, which graft space "
                    f"{self.name!r} does not search"
                )
            match = [c for c, s in self.candidates[slot].items() if s.to_dict() == spec.to_dict()]
            if not match:
                raise ValueError(
                    f"plan {plan.name!r}: layer {i} {slot} {spec.to_dict()} is none of graft space "
                    f"{self.name!r}'s candidates ({', '.join(self.candidates[slot])})"
                )
            choices[(i, slot)] = match[0]
        return choices


def param_name(key: tuple[int, str]) -> str:
    """The Optuna parameter of one (layer, slot): ``"3.mixer"``."""
    return f"{key[0]}.{key[1]}"


def describe(choices: Choices) -> str:
    """Short text of a plan: ``0:linear 3:swa 5:mlp=narrow`` (mixers by candidate name)."""
    parts = []
    for (i, slot), c in sorted(choices.items()):
        if c != KEEP:
            parts.append(f"{i}:{c}" if slot == "mixer" else f"{i}:{slot}={c}")
    return " ".join(parts) or "host (nothing grafted)"


def load_space(name_or_path: str | Path | Mapping) -> GraftSpace:
    """A graft space by name (``conf/graft_spaces/<name>.yaml``), path, or mapping."""
    if isinstance(name_or_path, Mapping):
        return GraftSpace.from_dict(name_or_path)
    data, path = read_config("graft_spaces", name_or_path, "graft space")
    return GraftSpace.from_dict(data, str(path))


def baseline_choices(space: GraftSpace, num_layers: int) -> dict[str, Choices]:
    """{plan name: choices} of the space's baselines."""
    plans = [load_plan(dict(b) if isinstance(b, Mapping) else b) for b in space.baselines]
    return {plan.name: space.choices_of(plan, num_layers) for plan in plans}
