"""``Arch``: one frozen dataclass that fully describes a model, in names and numbers only.

An architecture file (YAML or JSON) alone rebuilds the model with ``build_model``. Variants are
chosen by string fields (operator names, block structure, head kind), so an ``Arch`` is always
serialisable; validation happens in ``__post_init__`` and names the offending field.

Example (YAML)::

    dim: 256
    head_dim: 64
    head: {kind: lm, vocab_size: 256, max_len: 1024}
    layers:
      - {mixer: {name: softmax, heads: 4}, channel: {name: swiglu, ratio: 4}, norm: rmsnorm}
      - {mixer: {name: linear, heads: 4, feature_map: elu1}, channel: mlp, norm: rmsnorm}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.atomic import atomic_write_text
from search_spaces.heads import HEADS, get_head, required_fields
from search_spaces.registry import check_hparams, get_op, plugin_modules

BLOCKS = ("sequential", "parallel")
NORM_PLACEMENTS = ("pre", "post")
POS_EMBEDDINGS = ("none", "learned")


def _fail(field_name: str, message: str) -> ValueError:
    return ValueError(f"Arch.{field_name}: {message}")


@dataclass(frozen=True)
class OpSpec:
    """An operator by registered name plus its hyperparameters (``{name: swiglu, ratio: 4}``)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.params)}

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any] | OpSpec) -> OpSpec:
        """Accepts ``"name"``, ``{"name": ..., **hparams}`` or an ``OpSpec``."""
        if isinstance(value, OpSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            return cls(value["name"], {k: v for k, v in value.items() if k != "name"})
        raise ValueError(f"expected an operator name or a mapping with `name`, got {value!r}")

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))


@dataclass(frozen=True)
class LayerSpec:
    """One block: its token mixer, channel mixer and norm."""

    mixer: OpSpec
    channel: OpSpec
    norm: OpSpec = OpSpec("layernorm")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).to_dict() for k in ("mixer", "channel", "norm")}


@dataclass(frozen=True)
class LoopSpec:
    """Looped depth: ``begin`` layers once, the ``middle`` group ``repeats`` times with shared
    weights, ``end`` layers once. ``streams > 1`` adds hyper-connections: that many residual
    streams, mixed by small learned matrices after every pass of the middle group."""

    begin: int
    middle: int
    end: int
    repeats: int = 2
    streams: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HeadSpec:
    """What the model reads and predicts.

    - ``lm``: causal language model over ``vocab_size`` tokens, sequences up to ``max_len``;
    - ``seq_cls``: sequence classifier (tokens -> ``num_classes``), bidirectional;
    - ``image_cls``: image classifier on a grid of ``patch_size`` patches of a square
      ``image_size`` image with ``in_chans`` channels.
    """

    kind: str
    vocab_size: int = 0
    num_classes: int = 0
    max_len: int = 1024
    image_size: int = 0
    patch_size: int = 0
    in_chans: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _build(cls: type, value: Any, where: str):
    """Construct a spec dataclass from a mapping, naming ``where`` on unknown keys."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {value!r}")
    unknown = set(value) - _field_names(cls)
    if unknown:
        raise _fail(
            where, f"unknown key {sorted(unknown)[0]!r}; valid: {sorted(_field_names(cls))}"
        )
    return cls(**value)


@dataclass(frozen=True)
class Arch:
    """A complete model description. See the module docstring for the file format."""

    dim: int
    layers: tuple[LayerSpec, ...]
    head: HeadSpec
    head_dim: int = 64
    block: str = "sequential"
    norm_placement: str = "pre"
    pos_embedding: str = "none"
    loop: LoopSpec | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise nested values once, here
        set_(self, "head", _build(HeadSpec, self.head, "head"))
        if self.loop is not None:
            set_(self, "loop", _build(LoopSpec, self.loop, "loop"))
        layers = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Mapping):
                unknown = set(layer) - {"mixer", "channel", "norm"}
                if unknown:
                    raise _fail(f"layers[{i}]", f"unknown key {sorted(unknown)[0]!r}")
                try:
                    layer = LayerSpec(**{k: OpSpec.from_value(v) for k, v in layer.items()})
                except (TypeError, ValueError) as e:
                    raise _fail(f"layers[{i}]", str(e)) from None
            layers.append(layer)
        set_(self, "layers", tuple(layers))
        self._validate()

    # -- validation -------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("dim", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise _fail(name, f"must be a positive integer, got {value!r}")
        for name, valid in (
            ("block", BLOCKS),
            ("norm_placement", NORM_PLACEMENTS),
            ("pos_embedding", POS_EMBEDDINGS),
        ):
            if getattr(self, name) not in valid:
                raise _fail(name, f"must be one of {valid}, got {getattr(self, name)!r}")
        if not self.layers:
            raise _fail("layers", "must list at least one layer")
        self._validate_head()
        for i, layer in enumerate(self.layers):
            for slot, kind in (("mixer", "mixer"), ("channel", "channel"), ("norm", "norm")):
                spec = getattr(layer, slot)
                where = f"layers[{i}].{slot}"
                try:
                    cls = get_op(spec.name, kind)
                    check_hparams(cls, dict(spec.params))
                except ValueError as e:
                    raise _fail(where, str(e)) from None
                if self.causal and not cls.supports_causal:
                    raise _fail(where, f"{spec.name!r} cannot be used in a causal model")
        if self.loop is not None:
            lp = self.loop
            if min(lp.begin, lp.middle, lp.end) < 0 or lp.repeats < 1 or lp.streams < 1:
                raise _fail(
                    "loop", f"needs begin, middle, end >= 0 and repeats, streams >= 1: {lp}"
                )
            if lp.begin + lp.middle + lp.end != len(self.layers):
                raise _fail(
                    "loop",
                    f"`begin + middle + end == len(layers)` must hold, but got "
                    f"{lp.begin} + {lp.middle} + {lp.end} != {len(self.layers)}",
                )

    def _validate_head(self) -> None:
        h = self.head
        if h.kind not in HEADS:
            raise _fail("head.kind", f"must be one of {tuple(HEADS)}, got {h.kind!r}")
        for name in required_fields(h.kind):
            value = getattr(h, name)
            if not isinstance(value, int) or value < 1:
                raise _fail(
                    f"head.{name}", f"must be a positive integer for {h.kind!r}, got {value!r}"
                )
        check = getattr(get_head(h.kind)[0], "check", None)  # a plugin stem may not have one
        problem = check(h) if check is not None else None
        if problem is not None:
            raise _fail(*problem)

    # -- derived ------------------------------------------------------------------------------
    @property
    def causal(self) -> bool:
        """Whether mixers see only earlier tokens: the head kind's ``causal`` (language models
        are causal; classifiers see the whole sequence)."""
        return bool(getattr(get_head(self.head.kind)[1], "causal", False))

    @property
    def grid(self) -> tuple[int, int] | None:
        """The token grid of image models (the head kind's stem says), else None."""
        stem = get_head(self.head.kind)[0]
        return stem.grid(self.head) if hasattr(stem, "grid") else None

    @property
    def max_len(self) -> int:
        """Longest sequence the model accepts (the grid size for image models)."""
        return self.grid[0] * self.grid[1] if self.grid else self.head.max_len

    @property
    def loop_spec(self) -> LoopSpec:
        """The loop structure; a model without loops is all ``begin`` layers, run once."""
        return self.loop or LoopSpec(begin=len(self.layers), middle=0, end=0, repeats=1)

    @property
    def plugin_modules(self) -> list[str]:
        """The modules outside the platform that define operators of this architecture (as
        registered in this process): import them (``plugins=[...]``) before building it or
        calling ``load_exported``."""
        specs = (spec for layer in self.layers for spec in (layer.mixer, layer.channel, layer.norm))
        return plugin_modules(spec.name for spec in specs)

    @property
    def depth(self) -> int:
        """Number of blocks applied in a forward pass (loops counted each time)."""
        lp = self.loop_spec
        return lp.begin + lp.middle * lp.repeats + lp.end

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "head_dim": self.head_dim,
            "block": self.block,
            "norm_placement": self.norm_placement,
            "pos_embedding": self.pos_embedding,
            "head": self.head.to_dict(),
            "loop": self.loop.to_dict() if self.loop else None,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise ValueError(f"Arch: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - _field_names(cls)
        if unknown:
            raise _fail(sorted(unknown)[0], f"unknown field; valid: {sorted(_field_names(cls))}")
        missing = {"dim", "layers", "head"} - set(data)
        if missing:
            raise _fail(sorted(missing)[0], "is required")
        if not isinstance(data["layers"], list | tuple):
            raise _fail("layers", f"expected a list, got {data['layers']!r}")
        try:
            return cls(**{**data, "layers": tuple(data["layers"])})
        except TypeError as e:
            raise ValueError(f"Arch: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Arch:
        """Read an architecture from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if isinstance(data, Mapping) and "arch" in data and "layers" not in data:
            data = data["arch"]  # files that wrap the arch with other keys
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write YAML (or JSON for a ``.json`` suffix) atomically: a failure leaves no partial file."""
        path = Path(path)
        data = self.to_dict()
        text = (
            json.dumps(data, indent=2)
            if path.suffix == ".json"
            else yaml.safe_dump(data, sort_keys=False)
        )
        return atomic_write_text(path, text)

    @property
    def signature(self) -> str:
        """Stable content hash: the same architecture gives the same string in any process."""
        canonical = json.dumps(_canonical(self.to_dict()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.signature == other.signature

    def replace(self, **changes: Any) -> Arch:
        """A copy with some fields changed (validated like any new ``Arch``)."""
        return dataclasses.replace(self, **changes)


def _canonical(value: Any) -> Any:
    """Integral floats become ints so that ``ratio: 4`` and ``ratio: 4.0`` hash the same."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
