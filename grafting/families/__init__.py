"""Model families: where a Hugging Face architecture keeps its layers, attention and MLP.

Public API::

    list_families()              registered family names
    get_family(config_or_name)   the family of a Hugging Face config (by ``model_type``) or by name
    register_family(name)        decorator for your own ``Family`` subclasses
    FAMILIES                     every registered family (one instance each), by name
    Family                       the abstract base; ``grafting.families.base`` states the contract

Every module of this package is imported here, so a new file with a ``@register_family`` class
registers itself; a family of your own elsewhere registers when its module is imported.
"""

from __future__ import annotations

from typing import Any

from common.registry import import_submodules
from grafting.families.base import FAMILY_REGISTRY, SLOTS, Family, register_family

import_submodules(__name__, __path__)  # every module registers its family


def list_families() -> list[str]:
    """Names of the registered families."""
    return FAMILY_REGISTRY.names()


def get_family(config: Any) -> Family:
    """The family registered as ``config`` (a name), or the family of a Hugging Face config by
    its ``model_type`` (checked with ``Family.check_config``); raises ``ValueError`` if none."""
    if isinstance(config, str):
        return FAMILY_REGISTRY.lookup(config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILY_REGISTRY.values():
        if model_type in family.model_types:
            family.check_config(config)
            return family
    supported = sorted(t for f in FAMILY_REGISTRY.values() for t in f.model_types)
    raise ValueError(
        f"unsupported model family {model_type!r}; supported model_type: {', '.join(supported)}"
    )


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # a live view: a family registered later is in it too
        return tuple(FAMILY_REGISTRY.values())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FAMILIES", "SLOTS", "Family", "get_family", "list_families", "register_family"]
