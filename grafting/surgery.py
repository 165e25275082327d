"""Weight surgery: build each planned operator, start it from the host's weights where the
maths allows (LoLCATs, Mamba-in-the-Llama), and swap it into the model.

What an operator takes from the host is the operator's own business (``search_spaces.ops.base.
Operator``): ``hparams_from_attention`` gives a mixer its hyperparameters from the host's
attention, ``init_from_attention`` / ``init_from_mlp`` its weights. Attention-like operators take
the host's Q/K/V/O (``sqa`` and other operators with fewer heads keep every ``r``-th query head
and mean-pool key/value heads in groups); an MLP of the host's kind copies its weights, a
narrower one keeps the hidden units with the largest ``|w_in| * |w_out|``. Every copy checks key
sets and shapes first, under ``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from grafting.families.base import Family
from grafting.plan import GraftPlan, SlotSpec
from search_spaces.ops.base import Operator
from search_spaces.registry import check_hparams, create_op, get_op

GraftKey = tuple[int, str]


def op_name(family: Family, config: Any, slot: str, spec: SlotSpec) -> str:
    """The operator's registry name; ``host`` in an ``mlp`` slot is the host's own MLP kind."""
    if slot == "mlp" and spec.op == "host":
        return family.mlp_hparams(config)["name"]
    return spec.op


def op_kwargs(family: Family, config: Any, slot: str, spec: SlotSpec) -> dict[str, Any]:
    """Hyperparameters for ``create_op``: the host's where the operator takes them, then the
    plan's own (which win)."""
    cls = get_op(op_name(family, config, slot, spec), "mixer" if slot == "mixer" else "channel")
    check_hparams(cls, dict(spec.hparams))
    kw: dict[str, Any] = {}
    if slot == "mixer" and issubclass(cls, Operator):
        kw.update(cls.hparams_from_attention(family.attention_hparams(config), spec.hparams))
    elif slot == "mlp":
        host = family.mlp_hparams(config)
        if host["name"] == cls.op_name:
            kw.update({k: v for k, v in host.items() if k != "name"})
        if spec.host_fraction is not None:
            kw["hidden"] = max(1, int(round(host["hidden"] * spec.host_fraction)))
    kw.update(spec.hparams)
    return kw


def build_op(family: Family, config: Any, slot: str, spec: SlotSpec, where: str) -> nn.Module:
    """The operator for one slot (fresh weights); ``ValueError`` names the slot and cause."""
    kind = "mixer" if slot == "mixer" else "channel"
    try:
        kw = op_kwargs(family, config, slot, spec)
        context = family.context(config)
        name = op_name(family, config, slot, spec)
        return create_op(name, family.dim(config), kind=kind, context=context, **kw)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: cannot build {slot} {spec.op!r}: {e}") from None


def init_from_host(
    op: nn.Module,
    family: Family,
    config: Any,
    layer: nn.Module,
    slot: str,
    spec: SlotSpec,
    where: str,
) -> bool:
    """Start ``op`` from the host layer's weights through the operator's own hook
    (``init_from_attention`` / ``init_from_mlp``); True if it did."""
    if spec.init != "pretrained" or not isinstance(op, Operator):
        return False
    try:
        if slot == "mixer":
            w = family.attention_weights(layer)
            return op.init_from_attention(w, family.attention_hparams(config))
        return op.init_from_mlp(family.mlp_weights(layer), family.mlp_hparams(config))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def set_rotary(op: nn.Module, family: Family, model: nn.Module) -> None:
    """Give an operator's rotary embedding the host's frequencies and scaling (RoPE variants)."""
    rope = family.rotary(model)
    if rope is not None and isinstance(op, Operator):
        op.use_host_rotary(*rope)


def build_ops(model: nn.Module, family: Family, plan: GraftPlan) -> dict[GraftKey, nn.Module]:
    """Every planned operator, built (not installed): validates the plan against the model."""
    config = model.config
    slots = plan.resolve(family.num_layers(model))
    ops = {}
    for (i, slot), spec in slots.items():
        where = f"plan {plan.name!r}, layer {i} {slot}"
        op = build_op(family, config, slot, spec, where)
        set_rotary(op, family, model)
        ops[(i, slot)] = op
    return ops


def graft(
    model: nn.Module, family: Family, plan: GraftPlan, *, init: bool = True
) -> dict[GraftKey, nn.Module]:
    """Build, initialise (``init``) and install every operator of ``plan`` in ``model`` in place;
    returns ``{(layer, slot): wrapper}``. The model is checked in full before it is changed."""
    ops = build_ops(model, family, plan)
    slots = plan.resolve(family.num_layers(model))
    layers = family.layers(model)
    ref = next(model.parameters())
    for (i, slot), op in ops.items():
        op.to(device=ref.device, dtype=ref.dtype)
        if init:
            where = f"plan {plan.name!r}, layer {i} {slot}"
            init_from_host(op, family, model.config, layers[i], slot, slots[(i, slot)], where)
    wrappers = {(i, slot): family.install(layers[i], slot, op, i) for (i, slot), op in ops.items()}
    for wrapper in wrappers.values():
        wrapper.train(model.training)  # new modules start in training mode (dropout on)
    return wrappers
