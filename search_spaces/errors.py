"""The one exception type for a user's mistake (see ``search_spaces.cli.run_cli``): a bad config
value, an unknown name, a missing or malformed file. Commands report it as one line and exit
status 2; every other exception is a bug and keeps its traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake in how a command was called; reported as one line, exit status 2."""


class BadFileError(UsageError, ValueError):
    """A file that cannot be read as what it should be (truncated, another format, missing
    fields), with its path in the message; also a ``ValueError`` for library callers."""
