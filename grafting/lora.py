"""Low-rank adapters (Hu et al. 2021) for stage 2's ``train: lora``, with ``peft``: the host's
linear layers (``nn.Linear``, and GPT-2's ``Conv1D``) stay frozen and learn ``W + B A * alpha/r``;
the grafted operators are left out (they train whole). ``merge_lora`` folds every update back,
so the saved model has exactly the host's modules and keys."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

ADAPTED = (nn.Linear, Conv1D)  # the layer types LoRA adapts


def lora_targets(model: nn.Module, skip: list[nn.Module]) -> list[str]:
    """The full names of ``model``'s linear layers outside the ``skip`` modules."""
    skipped = {id(m) for s in skip for m in s.modules()}
    return [
        name for name, m in model.named_modules() if isinstance(m, ADAPTED) and id(m) not in skipped
    ]


def add_lora(model: nn.Module, skip: list[nn.Module], rank: int, alpha: float) -> PeftModel:
    """Adapters on every linear layer of ``model`` outside ``skip``, injected in place (``model``
    itself now runs with them; everything else is frozen). Returns the ``PeftModel`` that
    ``merge_lora`` needs."""
    if rank < 1:
        raise ValueError(f"stage2.lora_rank must be >= 1, but got {rank}")
    targets = lora_targets(model, skip)
    if not targets:
        raise ValueError("stage2.train=lora: the host has no linear layer outside the graft")
    fan_in_fan_out = any(isinstance(m, Conv1D) for m in model.modules())  # GPT-2 stores W^T
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    return get_peft_model(model, config)


def merge_lora(peft_model: PeftModel) -> nn.Module:
    """Fold the adapters into their layers; returns the plain model (the one ``add_lora`` got)."""
    return peft_model.merge_and_unload()
