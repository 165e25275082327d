"""The shipped English corpus: plain UTF-8 texts without Project Gutenberg boilerplate, each
documented in SOURCES.md, small enough for the repository, read back exactly."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from common.corpus import corpus_files, corpus_names, read_corpus, read_text

ROOT = Path(__file__).resolve().parents[2]


def test_files_are_clean_plain_text() -> None:
    files = corpus_files()
    assert len(files) >= 3 and [p.suffix for p in files] == [".txt"] * len(files)
    assert sum(p.stat().st_size for p in files) <= 3 * 2**20
    for path in files:
        text = path.read_bytes().decode("utf-8")  # strict: fails on anything but UTF-8
        assert len(text) > 100_000
        assert "\r" not in text and text.endswith("\n") and not text.startswith("\n")
        assert "gutenberg" not in text.lower()  # header, footer and licence removed
        assert "***" not in text[:2000] and "END OF" not in text[-2000:].upper()


def test_every_file_is_documented() -> None:
    sources = (ROOT / "conf" / "corpus" / "SOURCES.md").read_text()
    for path in corpus_files():
        assert f"`{path.name}`" in sources


def test_read_corpus_and_read_text() -> None:
    names = corpus_names()
    assert names == sorted(names) and "alice_in_wonderland" in names
    alice = read_text("alice_in_wonderland")
    assert alice.lstrip().startswith("ALICE'S ADVENTURES IN WONDERLAND")
    assert read_text("alice_in_wonderland.txt") == alice
    assert read_corpus() == "\n".join(read_text(n) for n in names)
    assert read_corpus(["alice_in_wonderland"]) == alice
    with pytest.raises(ValueError, match=r"unknown corpus text 'nope'; valid: alice"):
        read_text("nope")
    with pytest.raises(ValueError, match="at least one"):
        read_corpus([])


def test_corpus_installs_with_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "**/*.txt" in config["tool"]["setuptools"]["package-data"]["conf"]
