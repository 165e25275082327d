"""Model families by Hugging Face ``model_type``: ``get_family(config)``."""

from __future__ import annotations

from typing import Any

from grafting.families.base import SLOTS, Family
from grafting.families.bert import BertFamily
from grafting.families.dit import DiTFamily
from grafting.families.gpt2 import GPT2Family
from grafting.families.llama import LlamaFamily

FAMILIES: tuple[Family, ...] = (BertFamily(), GPT2Family(), LlamaFamily(), DiTFamily())


def get_family(config: Any) -> Family:
    """The family of a Hugging Face config, by ``model_type``; raises ``ValueError`` if none."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            family.check_config(config)
            return family
    supported = sorted(t for f in FAMILIES for t in f.model_types)
    raise ValueError(
        f"unsupported model family {model_type!r}; supported model_type: {', '.join(supported)}"
    )


__all__ = ["FAMILIES", "SLOTS", "Family", "get_family"]
