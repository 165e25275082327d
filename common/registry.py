"""A name -> object table shared by the platform's registries (tasks, graft families, heads).

Each registry is one ``Registry``: a read-only mapping that a ``register_*`` decorator fills,
whose ``get`` raises a one-line ``ValueError`` listing the valid names. ``import_submodules``
imports every module of a package, so that a new file there registers itself. The operator
registry (``search_spaces.registry``) keeps its own table: its names are unique across kinds.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Objects by unique name; ``what`` names one entry in messages (``"task"``)."""

    def __init__(
        self, what: str, *, hint: str = "", key: Callable[[T], object] | None = None
    ) -> None:
        self.what = what
        self.hint = hint  # appended to the unknown-name error: how a user's own entry registers
        self._key = key or (lambda obj: obj)  # what makes two registrations the same one
        self._table: dict[str, T] = {}

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``; registering the same one again (equal ``key``) is a no-op,
        a different one under a taken name an error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, but got {name!r}")
        if name in self._table and self._key(self._table[name]) != self._key(obj):
            raise ValueError(
                f"{self.what} name {name!r} is already registered ({_where(self._table[name])})"
            )
        self._table[name] = obj

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register a throwaway entry)."""
        self._table.pop(name, None)

    def lookup(self, name: object) -> T:
        """The entry registered as ``name``; raises ``ValueError`` listing the valid names."""
        if isinstance(name, str) and name in self._table:
            return self._table[name]
        hint = f" ({self.hint})" if self.hint else ""
        raise ValueError(f"unknown {self.what} {name!r}; valid names: {', '.join(self)}{hint}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._table)

    def __getitem__(self, name: str) -> T:
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"


def _where(obj: object) -> str:
    """``module.Qualname`` of a class (or of an instance's class, or of a tuple's last class)."""
    if isinstance(obj, tuple) and obj:
        obj = obj[-1]
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (whose ``__path__`` is ``path``): each registers what
    it defines. Call it from the package's ``__init__``: ``import_submodules(__name__, __path__)``."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
