"""Weight surgery: build each planned operator, start it from the host's weights where the
maths allows (LoLCATs, Mamba-in-the-Llama), and swap it into the model.

Attention-like operators (same q/k/v/o layout as softmax: ``softmax``, ``sqa``, ``linear``,
``sliding_window``) take the host's Q/K/V/O unchanged; ``sqa`` with fewer heads keeps every
``r``-th query head and mean-pools key/value heads in groups (the GQA uptraining init); an MLP of
the host's kind copies its weights, a narrower one keeps the hidden units with the largest
``|w_in| * |w_out|``. Every copy checks key sets and shapes first, under ``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting.families.base import Family
from grafting.plan import GraftPlan, SlotSpec
from search_spaces.ops.projections import AttentionProjections
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
    if slot == "mixer" and issubclass(cls, AttentionProjections):
        kw.update(family.attention_hparams(config))
        if cls.op_name == "sqa":
            kw["q_heads"] = spec.hparams.get("q_heads", max(1, kw["heads"] // 2))
            kw["kv_heads"] = min(kw["kv_heads"], kw["q_heads"])
        if "rope_theta" not in kw:
            kw.pop("rope_theta", None)
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


def copy_checked(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``tensors`` into ``module``'s parameters of the same names (nanoGPT-style: the key
    set and every shape are checked before anything is written)."""
    own = dict(module.named_parameters())
    missing = sorted(set(tensors) - set(own))
    if missing:
        raise ValueError(f"{where}: operator has no parameter {missing[0]!r} to initialise")
    for name, t in tensors.items():
        if own[name].shape != t.shape:
            raise ValueError(
                f"{where}: shape of {name} is {tuple(own[name].shape)}, host gives {tuple(t.shape)}"
            )
    with torch.no_grad():
        for name, t in tensors.items():
            own[name].copy_(t)


def sqa_weights(w: dict[str, torch.Tensor], op: nn.Module, host: dict[str, Any]) -> dict:
    """Host attention weights reduced to ``op.heads`` query and ``op.kv_heads`` kv heads.

    Query heads ``0, r, 2r, ...`` (``r = H / q_heads``) are kept unchanged, with their columns of
    ``W_o`` (unscaled: the dropped heads' share is left for distillation to recover). Each new kv
    head serves ``q_heads / kv_heads`` consecutive kept query heads and starts as the mean of the
    host kv heads those queries read, so a host with as many kv heads as query heads keeps its
    kept heads exactly (query, key, value and output)."""
    H, Hkv, hd = host["heads"], host["kv_heads"], host["head_dim"]
    if H % op.heads or Hkv % op.kv_heads or op.heads % op.kv_heads:
        raise ValueError(
            f"cannot start {op.heads} query / {op.kv_heads} kv heads from the host's {H} / {Hkv}: "
            "both must divide the host's, and the kv heads the query heads"
        )
    keep = torch.arange(0, H, H // op.heads)  # kept query heads
    host_kv = (keep // (H // Hkv)).view(op.kv_heads, -1)  # host kv head of each, per new kv head

    def take(t: torch.Tensor) -> torch.Tensor:  # (H hd, ...) -> (q_heads hd, ...)
        return t.reshape(H, hd, -1)[keep].reshape(-1, *t.shape[1:])

    def pool(t: torch.Tensor) -> torch.Tensor:  # (Hkv hd, ...) -> (kv_heads hd, ...)
        heads = t.reshape(Hkv, hd, -1)
        pooled = [heads[group.unique()].mean(0) for group in host_kv]
        return torch.stack(pooled).reshape(-1, *t.shape[1:])

    out = {}
    for name, t in w.items():
        if name.startswith("q_proj"):
            out[name] = take(t)
        elif name.startswith(("k_proj", "v_proj")):
            out[name] = pool(t)
        elif name == "o_proj.weight":  # the kept heads' columns
            out[name] = take(t.t()).t().contiguous()
        else:
            out[name] = t
    return out


def narrow_mlp(w: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Keep the ``hidden`` units with the largest product of input and output weight norms."""
    ins = [k for k in w if ".fc1" in k]
    outs = [k for k in w if ".fc2" in k]
    score = w[[k for k in ins if k.endswith("weight")][0]].norm(dim=1)
    score = score * w["mlp.fc2.weight"].norm(dim=0)
    keep = score.topk(hidden).indices.sort().values
    out = {k: w[k][keep] for k in ins}
    out.update({k: w[k][:, keep] if k.endswith("weight") else w[k] for k in outs})
    return out


def init_from_host(
    op: nn.Module,
    family: Family,
    config: Any,
    layer: nn.Module,
    slot: str,
    spec: SlotSpec,
    where: str,
) -> bool:
    """Start ``op`` from the host layer's weights when the layouts allow; True if it did."""
    if spec.init != "pretrained":
        return False
    if slot == "mixer" and isinstance(op, AttentionProjections):
        w = family.attention_weights(layer)
        host = family.attention_hparams(config)
        if (op.heads, op.kv_heads) != (host["heads"], host["kv_heads"]):
            w = sqa_weights(w, op, host)
        copy_checked(op, w, where)
        return True
    if slot == "mlp" and op_name(family, config, slot, spec) == family.mlp_hparams(config)["name"]:
        w = family.mlp_weights(layer)
        if op.hidden != family.mlp_hparams(config)["hidden"]:
            w = narrow_mlp(w, op.hidden)
        copy_checked(op, w, where)
        return True
    return False


def set_rotary(op: nn.Module, family: Family, model: nn.Module) -> None:
    """Give an operator's rotary embedding the host's frequencies and scaling (RoPE variants)."""
    rope = family.rotary(model)
    if rope is not None and getattr(op, "rotary", None) is not None:
        inv_freq, scaling = rope
        if op.rotary.inv_freq.shape != inv_freq.shape:
            raise ValueError(
                f"rotary sizes differ: operator {tuple(op.rotary.inv_freq.shape)}, "
                f"host {tuple(inv_freq.shape)}"
            )
        op.rotary.inv_freq = inv_freq.to(op.rotary.inv_freq.device)
        op.rotary.scaling = scaling


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
