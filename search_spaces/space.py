"""``SearchSpace``: the choices of every architecture dimension, read from ``conf/space/*.yaml``.

A space file lists, per dimension, the allowed values::

    name: efficient_attn
    head_dim: 32
    dim: [128, 256]                 # width (embedding dim) choices
    depth: [2, 3, 4]                # elastic depth: the first `depth` layer slots
    norm: [layernorm, rmsnorm]      # one norm type for the whole model
    block: [sequential]
    norm_placement: [pre]
    pos_embedding: none
    loop: null                      # or {begin: [..], middle: [..], end: [..], repeats: [..], streams: [..]}
    head: {kind: lm, vocab_size: 256, max_len: 1024}   # default head (a task overrides it)
    mixer:                          # per layer: operator -> hyperparameter -> choices
      softmax: {heads: [2, 4], rope_theta: [10000.0]}
      linear: {heads: [2, 4], feature_map: [elu1, hedgehog]}
    channel:
      mlp: {ratio: [2, 4]}
    references:                     # baseline / teacher / smallest, given as choices
      baseline: {dim: 256, depth: 4, norm: layernorm, mixer: {name: softmax, heads: 4}, ...}

In a looped space ``depth`` is absent: the layer slots are the ``begin``/``middle``/``end`` groups.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from search_spaces.arch import Arch, HeadSpec, LayerSpec, LoopSpec, OpSpec
from search_spaces.config_paths import find_config
from search_spaces.errors import UsageError
from search_spaces.registry import check_hparams, get_op

REFERENCES = ("baseline", "teacher", "smallest")
LOOP_GROUPS = ("begin", "middle", "end")  # layers per group (0: none)
LOOP_KEYS = (*LOOP_GROUPS, "repeats", "streams")


class Suggester(Protocol):
    """What ``SearchSpace.sample`` needs: an ``optuna.Trial`` has it; ``RandomSuggester`` too."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class RandomSuggester:
    """Uniform random choices from a ``random.Random`` (for sampling outside an Optuna study)."""

    def __init__(self, rng: random.Random | int | None = None) -> None:
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]


class _Replay:
    """A suggester answering each decision from ``value(name)`` and recording it."""

    def __init__(self, value) -> None:
        self.value, self.params = value, {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = self.value(name)
        return self.params[name]


class SpaceError(UsageError, ValueError):
    """A malformed space file: says which file, which field and what was expected (a user
    error for the commands; a ``ValueError`` for code that catches those)."""

    def __init__(self, source: str, field: str, expected: str, got: Any) -> None:
        super().__init__(f"{source}: field `{field}`: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class OpChoices:
    """One operator of a space and the allowed values of each of its hyperparameters."""

    name: str
    hparams: Mapping[str, tuple[Any, ...]]

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of hyperparameter values (the cartesian product)."""
        keys = list(self.hparams)
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*self.hparams.values())
        ]

    def count(self) -> int:
        return math.prod(len(v) for v in self.hparams.values())


def _choices(source: str, field: str, value: Any, allow_scalar: bool = True) -> tuple[Any, ...]:
    if isinstance(value, list | tuple):
        if not value:
            raise SpaceError(source, field, "a non-empty list of choices", value)
        return tuple(value)
    if allow_scalar and value is not None and not isinstance(value, Mapping):
        return (value,)
    raise SpaceError(source, field, "a list of choices", value)


def _int_choices(source: str, field: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """Choices that must be integers >= ``minimum`` (widths, depths, loop group sizes)."""
    choices = _choices(source, field, value)
    for c in choices:
        if isinstance(c, bool) or not isinstance(c, int) or c < minimum:
            kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
            raise SpaceError(source, field, f"choices that are {kind}", c)
    return choices


def _op_choices(source: str, field: str, kind: str, value: Any) -> tuple[OpChoices, ...]:
    """``{name: {hparam: [choices]}}`` or ``[name, ...]`` -> validated ``OpChoices``."""
    if isinstance(value, list | tuple):
        value = {name: {} for name in value}
    if not isinstance(value, Mapping) or not value:
        raise SpaceError(
            source, field, f"a mapping of {kind} operator names to hyperparameters", value
        )
    out = []
    for name, hparams in value.items():
        hparams = hparams or {}
        if not isinstance(hparams, Mapping):
            raise SpaceError(
                source, f"{field}.{name}", "a mapping of hyperparameter choices", hparams
            )
        try:
            cls = get_op(name, kind)
            check_hparams(cls, dict(hparams))
        except ValueError as e:
            raise SpaceError(
                source, f"{field}.{name}", f"a registered {kind} ({e})", name
            ) from None
        choices = {k: _choices(source, f"{field}.{name}.{k}", v) for k, v in hparams.items()}
        out.append(OpChoices(name, choices))
    return tuple(out)


class SearchSpace:
    """The choices of a space; samples, checks and names architectures within it."""

    def __init__(self, data: Mapping[str, Any], source: str = "<space>") -> None:
        if not isinstance(data, Mapping):
            raise SpaceError(source, "<top level>", "a mapping", type(data).__name__)
        known = {
            "name",
            "description",
            "head_dim",
            "dim",
            "depth",
            "norm",
            "block",
            "norm_placement",
            "pos_embedding",
            "loop",
            "head",
            "mixer",
            "channel",
            "references",
        }
        unknown = set(data) - known
        if unknown:
            raise SpaceError(source, sorted(unknown)[0], f"one of {sorted(known)}", "unknown field")
        self.source = source
        self.data = dict(data)  # as given, so a supernet or a run can record and rebuild it
        self.name = str(data.get("name") or Path(source).stem)
        self.description = str(data.get("description", ""))
        self.head_dim = data.get("head_dim", 64)
        if not isinstance(self.head_dim, int) or self.head_dim < 1:
            raise SpaceError(source, "head_dim", "a positive integer", self.head_dim)
        self.dims = _int_choices(source, "dim", data.get("dim"))
        self.norms = _op_choices(source, "norm", "norm", data.get("norm", ["layernorm"]))
        self.blocks = _choices(source, "block", data.get("block", ["sequential"]))
        self.norm_placements = _choices(
            source, "norm_placement", data.get("norm_placement", ["pre"])
        )
        self.pos_embedding = data.get("pos_embedding", "none")
        self.mixers = _op_choices(source, "mixer", "mixer", data.get("mixer"))
        self.channels = _op_choices(source, "channel", "channel", data.get("channel"))
        loop = data.get("loop")
        if loop is None:
            self.loop = None
            self.depths = _int_choices(source, "depth", data.get("depth"))
        else:
            if not isinstance(loop, Mapping) or set(loop) != set(LOOP_KEYS):
                raise SpaceError(source, "loop", f"a mapping with keys {LOOP_KEYS}", loop)
            self.loop = {
                k: _int_choices(source, f"loop.{k}", loop[k], 0 if k in LOOP_GROUPS else 1)
                for k in LOOP_KEYS
            }
            if min(self.loop["begin"]) + min(self.loop["middle"]) + min(self.loop["end"]) < 1:
                raise SpaceError(
                    source, "loop", "choices that always give at least one layer", loop
                )
            self.depths = None
        try:
            self.default_head = HeadSpec(**data.get("head", {"kind": "lm", "vocab_size": 256}))
        except TypeError as e:
            raise SpaceError(source, "head", "HeadSpec fields", str(e)) from None
        refs = data.get("references") or {}
        missing = [r for r in REFERENCES if r not in refs]
        if missing:
            raise SpaceError(source, f"references.{missing[0]}", "a reference architecture", None)
        self._references = {r: self._reference(refs[r], f"references.{r}") for r in REFERENCES}

    # -- the slots an architecture's layers occupy -----------------------------------------
    def slot_names(self, arch: Arch) -> list[str]:
        """Names of the weight slots of ``arch.layers`` (``layer3``, or ``begin0``/``middle1``/
        ``end0`` in looped spaces). Architectures share the weights of equally named slots."""
        lp = arch.loop_spec
        return self._slots(
            len(arch.layers), {"begin": lp.begin, "middle": lp.middle, "end": lp.end}
        )

    def _slots(self, depth: int, loop: Mapping[str, int] | None) -> list[str]:
        if self.loop is None:
            return [f"layer{i}" for i in range(depth)]
        return [f"{g}{i}" for g in ("begin", "middle", "end") for i in range(loop[g])]

    def all_slots(self) -> list[str]:
        """Every slot any architecture of the space can use."""
        if self.loop is None:
            return [f"layer{i}" for i in range(max(self.depths))]
        return [f"{g}{i}" for g in ("begin", "middle", "end") for i in range(max(self.loop[g]))]

    # -- sampling -------------------------------------------------------------------------------
    def sample(
        self, trial: Suggester | random.Random | int | None = None, head: HeadSpec | None = None
    ) -> Arch:
        """One architecture, choices drawn through ``trial.suggest_categorical`` (an Optuna trial)
        or at random (a ``random.Random`` or a seed), with readable parameter names."""
        s = trial if hasattr(trial, "suggest_categorical") else RandomSuggester(trial)

        def choice(name: str, options: Sequence[Any]) -> Any:  # a single option is no decision
            return options[0] if len(options) == 1 else s.suggest_categorical(name, list(options))

        glob = {
            "dim": choice("dim", self.dims),
            "norm": choice("norm", [n.name for n in self.norms]),
            "block": choice("block", self.blocks),
            "norm_placement": choice("norm_placement", self.norm_placements),
        }
        if self.loop is None:
            glob["depth"] = choice("depth", self.depths)
        else:
            glob["loop"] = {k: choice(f"loop.{k}", self.loop[k]) for k in LOOP_KEYS}
        layers = []
        for slot in self._slots(glob.get("depth", 0), glob.get("loop")):
            mixer = self._sample_op(choice, f"{slot}.mixer", self.mixers)
            channel = self._sample_op(choice, f"{slot}.channel", self.channels)
            layers.append(LayerSpec(mixer, channel, self._norm_spec(glob["norm"])))
        return self._assemble(glob, layers, head)

    @staticmethod
    def _sample_op(choice, prefix: str, ops: tuple[OpChoices, ...]) -> OpSpec:
        name = choice(prefix, [op.name for op in ops])
        op = next(o for o in ops if o.name == name)
        return OpSpec(name, {k: choice(f"{prefix}.{name}.{k}", v) for k, v in op.hparams.items()})

    def _norm_spec(self, name: str) -> OpSpec:
        return OpSpec(name, next(n for n in self.norms if n.name == name).variants()[0])

    def _n_layers(self, glob: Mapping[str, Any]) -> int:
        if self.loop is None:
            return glob["depth"]
        return glob["loop"]["begin"] + glob["loop"]["middle"] + glob["loop"]["end"]

    def _assemble(
        self, glob: Mapping[str, Any], layers: list[LayerSpec], head: HeadSpec | None
    ) -> Arch:
        loop = glob.get("loop")
        if loop is not None and loop["middle"] == 0:
            loop = {**loop, "repeats": 1, "streams": 1}
        return Arch(
            dim=glob["dim"],
            head_dim=self.head_dim,
            layers=tuple(layers),
            head=head or self.default_head,
            block=glob["block"],
            norm_placement=glob["norm_placement"],
            pos_embedding=self.pos_embedding,
            loop=LoopSpec(**loop) if loop else None,
        )

    # -- reference architectures ------------------------------------------------------------------
    def _reference(self, spec: Any, field: str) -> Arch:
        """A reference given as choices: global values plus one mixer/channel for all layers, or
        ``layers: [{mixer, channel}, ...]`` for different layers."""
        if not isinstance(spec, Mapping):
            raise SpaceError(self.source, field, "a mapping of choices", spec)
        glob = {
            "dim": spec.get("dim"),
            "norm": spec.get("norm", self.norms[0].name),
            "block": spec.get("block", self.blocks[0]),
            "norm_placement": spec.get("norm_placement", self.norm_placements[0]),
            "depth": spec.get("depth"),
            "loop": spec.get("loop"),
        }
        try:
            n = self._n_layers(glob)
            per_layer = (
                spec.get("layers") or [{"mixer": spec["mixer"], "channel": spec["channel"]}] * n
            )
            layers = [
                LayerSpec(
                    OpSpec.from_value(layer["mixer"]),
                    OpSpec.from_value(layer["channel"]),
                    self._norm_spec(glob["norm"]),
                )
                for layer in per_layer
            ]
            arch = self._assemble(glob, layers, None)
            self.validate(arch)
        except (KeyError, TypeError, ValueError, StopIteration) as e:
            raise SpaceError(
                self.source, field, "an architecture within the space", str(e)
            ) from None
        return arch

    def _with_head(self, which: str, head: HeadSpec | None) -> Arch:
        arch = self._references[which]
        return arch if head is None else arch.replace(head=head)

    def baseline(self, head: HeadSpec | None = None) -> Arch:
        """The hand-designed model the search must beat."""
        return self._with_head("baseline", head)

    def teacher(self, head: HeadSpec | None = None) -> Arch:
        """The largest/strongest subnet, the in-place distillation teacher."""
        return self._with_head("teacher", head)

    def smallest(self, head: HeadSpec | None = None) -> Arch:
        """The cheapest subnet that can still learn."""
        return self._with_head("smallest", head)

    # -- membership ---------------------------------------------------------------------------------
    def size(self) -> int:
        """The number of distinct architectures in the space."""
        per_layer = sum(o.count() for o in self.mixers) * sum(o.count() for o in self.channels)
        glob = len(self.dims) * len(self.norms) * len(self.blocks) * len(self.norm_placements)
        if self.loop is None:
            return glob * sum(per_layer**d for d in self.depths)
        shapes = set()  # (begin, middle, end, repeats, streams); without a middle group the
        for b, m, e, r, st in itertools.product(*(self.loop[k] for k in LOOP_KEYS)):  # last two
            shapes.add((b, m, e, r, st) if m else (b, 0, e, 1, 1))  # make no difference
        total = sum(per_layer ** (b + m + e) for b, m, e, _, _ in shapes)
        return glob * total

    def validate(self, arch: Arch) -> None:
        """Raise ``ValueError`` naming the first field of ``arch`` outside the space."""

        def check(field: str, value: Any, allowed: Sequence[Any]) -> None:
            if value not in allowed:
                raise ValueError(
                    f"{field}: {value!r} is not a choice of space {self.name!r} {list(allowed)}"
                )

        check("dim", arch.dim, self.dims)
        check("head_dim", arch.head_dim, (self.head_dim,))
        check("block", arch.block, self.blocks)
        check("norm_placement", arch.norm_placement, self.norm_placements)
        check("pos_embedding", arch.pos_embedding, (self.pos_embedding,))
        if self.loop is None:
            check("loop", arch.loop, (None,))
            check("depth", len(arch.layers), self.depths)
        else:
            lp = arch.loop_spec
            for k in LOOP_KEYS:
                if not (lp.middle == 0 and k in ("repeats", "streams")):
                    check(f"loop.{k}", getattr(lp, k), self.loop[k])
        norms = {layer.norm.name for layer in arch.layers}
        if len(norms) > 1:
            raise ValueError(
                f"layers[*].norm: space {self.name!r} uses one norm for all layers, got {sorted(norms)}"
            )
        for i, layer in enumerate(arch.layers):
            for slot, ops in (
                ("mixer", self.mixers),
                ("channel", self.channels),
                ("norm", self.norms),
            ):
                spec = getattr(layer, slot)
                field = f"layers[{i}].{slot}"
                check(field, spec.name, [o.name for o in ops])
                op = next(o for o in ops if o.name == spec.name)
                check(
                    f"{field}.{spec.name} hyperparameters",
                    sorted(spec.params),
                    [sorted(op.hparams)],
                )
                for k, allowed in op.hparams.items():
                    check(f"{field}.{k}", spec.params[k], allowed)

    def params_of(self, arch: Arch) -> dict[str, Any]:
        """The sampling decisions under which ``sample`` returns ``arch`` (head aside): the
        parameters to ``optuna.Study.enqueue_trial`` so that a trial evaluates ``arch``."""
        self.validate(arch)
        slots = dict(zip(self.slot_names(arch), arch.layers, strict=True))
        glob = {
            "dim": arch.dim,
            "norm": arch.layers[0].norm.name,
            "block": arch.block,
            "norm_placement": arch.norm_placement,
            "depth": len(arch.layers),
        }
        lp = arch.loop_spec

        def value(name: str) -> Any:
            if name in glob:
                return glob[name]
            first, _, rest = name.partition(".")
            if first == "loop":
                return getattr(lp, rest)
            part, _, hparam = rest.partition(".")  # "mixer" or "mixer.<op>.<hparam>"
            spec = getattr(slots[first], part)
            return spec.name if not hparam else spec.params[hparam.partition(".")[2]]

        replay = _Replay(value)
        self.sample(replay)
        return replay.params

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, size={self.size():.3g})"


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """A space by name (``conf/space/NAME.yaml`` or a user config dir) or from a YAML file."""
    path = find_config("space", name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(str(path), "<file>", "valid YAML", str(e).splitlines()[0]) from None
    return SearchSpace(data, source=str(path))
