"""The public-domain English corpus shipped in ``conf/corpus/`` (see ``conf/corpus/SOURCES.md``):
the ``charlm`` task trains on it, grafting calibrates and evaluates on it.

Plain UTF-8 ``.txt`` files, one work each, read through ``importlib.resources`` so that they
are found both in a source checkout and in an installed package. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

_PACKAGE, _FOLDER = "conf", "corpus"


def corpus_dir() -> Path:
    """The folder of the shipped texts."""
    # ``conf`` is a regular package installed as files (not zipped), so this is a real path
    return Path(str(resources.files(_PACKAGE).joinpath(_FOLDER)))


def corpus_files() -> list[Path]:
    """Paths of the shipped texts, sorted by file name."""
    return sorted(corpus_dir().glob("*.txt"))


def corpus_names() -> list[str]:
    """Names of the shipped texts (file names without ``.txt``), sorted."""
    return [p.stem for p in corpus_files()]


def read_text(name: str) -> str:
    """One text by name (``"alice_in_wonderland"`` or ``"alice_in_wonderland.txt"``)."""
    stem = name.removesuffix(".txt")
    path = corpus_dir() / f"{stem}.txt"
    if not path.is_file():
        raise ValueError(f"unknown corpus text {name!r}; valid: {', '.join(corpus_names())}")
    return path.read_text(encoding="utf-8")


def read_corpus(names: Iterable[str] | None = None) -> str:
    """The texts ``names`` (default: all, sorted by name) joined by one blank line."""
    names = corpus_names() if names is None else list(names)
    if not names:
        raise ValueError("read_corpus needs at least one text name, got an empty list")
    return "\n".join(read_text(n) for n in names)
