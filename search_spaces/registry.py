"""One name -> class table for every operator, grouped by kind.

An operator is registered with ``@register_op("name", kind="mixer")``. Names are unique across
kinds so that ``get_op("softmax")`` is unambiguous. Registration happens on import: importing
``search_spaces`` imports ``search_spaces.ops``, and a user's own module registers its operators
the moment it is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

KINDS = ("mixer", "channel", "norm")
LIBRARY = "search_spaces.ops"  # the package of the platform's own operators

_REGISTRY: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}


def register_op(name: str, *, kind: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``cls`` available as ``name`` among the operators of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, but got {kind=}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        for other_kind, table in _REGISTRY.items():
            if name in table and table[name] is not cls:
                raise ValueError(
                    f"operator name {name!r} is already registered as a {other_kind} "
                    f"({table[name].__module__}.{table[name].__qualname__})"
                )
        cls.op_name = name
        cls.op_kind = kind
        _REGISTRY[kind][name] = cls
        return cls

    return decorator


def list_ops(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered operator names: ``{kind: [names]}``, or the names of one ``kind``."""
    if kind is None:
        return {k: sorted(table) for k, table in _REGISTRY.items()}
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, but got {kind=}")
    return sorted(_REGISTRY[kind])


def get_op(name: str | type[nn.Module], kind: str | None = None) -> type[nn.Module]:
    """The operator class registered as ``name`` (a class is returned as it is)."""
    if isinstance(name, type):
        return name
    tables = [_REGISTRY[kind]] if kind is not None else list(_REGISTRY.values())
    for table in tables:
        if name in table:
            return table[name]
    valid = list_ops(kind) if kind is not None else sorted(n for t in tables for n in t)
    what = f"{kind} operator" if kind is not None else "operator"
    raise ValueError(
        f"unknown {what} {name!r}; valid names: {', '.join(valid)} (an operator of your own "
        "registers when its module is imported: plugins=[your_module] on the command line, "
        "or `import your_module` first in Python)"
    )


def plugin_modules(names: Iterable[str]) -> list[str]:
    """The modules outside the platform's operator library (``search_spaces.ops``) that define
    the operators ``names``: what to import (``plugins=[...]``) before an architecture naming
    them can be built."""
    modules = {get_op(name).__module__ for name in names}
    return sorted(m for m in modules if m != LIBRARY and not m.startswith(f"{LIBRARY}."))


def create_op(
    name: str | type[nn.Module],
    dim: int,
    *,
    kind: str | None = None,
    context: dict[str, Any] | None = None,
    **hparams: Any,
) -> nn.Module:
    """Instantiate an operator.

    ``hparams`` are passed as given (an unknown one is an error naming the operator), while
    ``context`` holds model-wide values (``causal``, ``head_dim``, ``grid``, ``max_len``) that are
    passed only to operators whose constructor takes them.
    """
    cls = get_op(name, kind)
    check_hparams(cls, hparams)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in (context or {}).items() if k in params and k not in hparams}
    return cls(dim, **kwargs, **hparams)


def check_hparams(cls: type[nn.Module], hparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``cls``'s constructor does not take one of ``hparams``."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in hparams if k not in params or k in ("self", "dim")]
    if unknown:
        valid = [k for k in params if k not in ("self", "dim")]
        raise ValueError(
            f"operator {cls.op_name!r} has no hyperparameter {unknown[0]!r}; "
            f"valid: {', '.join(valid)}"
        )
