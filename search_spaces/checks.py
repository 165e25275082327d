"""Checking what a user gives a command, before any work: each check raises ``UsageError``
(one line, exit status 2 in ``search_spaces.cli.run_cli``) naming the setting, what it must be
and the value it got; ``user_input`` marks where input enters code that raises plain
``ValueError``s (parsers, constructors), so those become ``UsageError``s too while the same
exceptions anywhere else stay bugs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from omegaconf import OmegaConf

from search_spaces.errors import UsageError

__all__ = ["check_choice", "check_int", "check_number", "first_line", "parse_shape", "user_input"]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (a KeyError: the missing key), or its type."""
    if isinstance(e, KeyError) and e.args:
        return f"missing key {e.args[0]!r}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def user_input(what: str) -> Iterator[None]:
    """Mark where user input enters: a ``ValueError``, ``KeyError`` or ``OSError`` raised in the
    block (by a parser, a task's constructor, a file reader) is the user's mistake and becomes a
    ``UsageError`` naming ``what`` (a field like ``task`` or ``base=PATH``, or a file) unless
    its message already starts with that field's name."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, KeyError, OSError) as e:
        message, field = first_line(e), what.partition("=")[0]
        raise UsageError(message if message.startswith(field) else f"{what}: {message}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    optional: bool = False,
) -> None:
    """``UsageError`` unless ``value`` is an integer >= ``minimum`` (and <= ``maximum``), or None
    when ``optional``."""
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        kind = kind if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise UsageError(f"{name} must be {kind}{' or null' if optional else ''}, got {value!r}")


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    optional: bool = False,
) -> None:
    """``UsageError`` unless ``value`` is a number within the given bounds (or None when
    ``optional``)."""
    if optional and value is None:
        return
    ok, rules = _is_number(value), []
    if above is not None:
        ok, rules = ok and value > above, [*rules, f"> {above}"]
    if at_least is not None:
        ok, rules = ok and value >= at_least, [*rules, f">= {at_least}"]
    if below is not None:
        ok, rules = ok and value < below, [*rules, f"< {below}"]
    if at_most is not None:
        ok, rules = ok and value <= at_most, [*rules, f"<= {at_most}"]
    if not ok:
        kind = " ".join(["a number", " and ".join(rules)]).strip()
        raise UsageError(f"{name} must be {kind}{' or null' if optional else ''}, got {value!r}")


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """``UsageError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def parse_shape(
    name: str, value: object, *, length: int | None = 2, optional: bool = False
) -> tuple[int, ...] | None:
    """``value`` (a list from the config) as a tuple of positive integers, ``length`` of them
    (``[batch, length]`` by default; None: any number)."""
    if optional and value is None:
        return None
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    ok = isinstance(value, list | tuple) and len(value) > 0 and length in (None, len(value))
    if not (ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        what = {None: "a list of positive integers", 2: "[batch, length] with positive integers"}
        kind = what.get(length, f"a list of {length} positive integers")
        raise UsageError(f"{name} must be {kind}{' or null' if optional else ''}, got {value!r}")
    return tuple(value)
