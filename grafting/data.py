"""Calibration and evaluation text, and token batches.

The source is a setting (``text.source``): ``corpus`` (every ``conf/corpus/*.txt``, public-domain
English; see ``conf/corpus/SOURCES.md``), one corpus file by name, ``pydoc`` (the Python language
reference that every Python carries in ``pydoc_data.topics``: modern technical English, another
domain than the books), or a path to a ``.txt`` file. Each file's paragraphs are split in order:
the last ``eval_fraction`` go to evaluation, the rest to calibration, so the two never share text.
The report's out-of-domain text (``report.ood_source``) is read whole: none of it calibrates.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any

import torch

from common.corpus import corpus_dir, corpus_files, corpus_names

PYDOC = "pydoc"


def pydoc_paragraphs() -> list[str]:
    """Prose paragraphs of the Python language reference (``pydoc_data.topics``, PSF licence,
    part of the standard library); indented code and grammar blocks and headings are dropped."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            if lines and not any(ln.startswith((" ", "\t")) for ln in lines):
                out += paragraphs(block)
    return out


def source_texts(source: str) -> list[tuple[str, list[str]]]:
    """(name, paragraphs) of each text of a source setting (see the module docstring)."""
    if source == PYDOC:
        return [("pydoc_data.topics (Python language reference)", pydoc_paragraphs())]
    return [
        (str(f), paragraphs(f.read_text(encoding="utf-8", errors="replace")))
        for f in source_files(source)
    ]


def check_source(source: str) -> None:
    """``FileNotFoundError`` unless ``source`` names text (checked before any work)."""
    if source != PYDOC:
        source_files(source)


def source_files(source: str) -> list[Path]:
    """The text files of a source setting (see the module docstring)."""
    if source == "corpus":
        files = corpus_files()
        if not files:
            raise FileNotFoundError(f"no corpus text found in {corpus_dir()}")
        return files
    named = corpus_dir() / f"{source}.txt"
    if named.is_file():
        return [named]
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    names = corpus_names()
    raise FileNotFoundError(
        f"text source {source!r} is not 'corpus', {PYDOC!r}, a corpus name ({', '.join(names)}) "
        "or a file"
    )


def paragraphs(text: str, min_chars: int = 80) -> list[str]:
    """Blank-line separated paragraphs, whitespace collapsed, short ones (headings) dropped."""
    out = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in out if len(p) >= min_chars]


def sentences(paras: list[str], min_words: int = 5, max_words: int = 40) -> list[str]:
    out = []
    for p in paras:
        for s in re.split(r"(?<=[.!?;])\s+(?=[`'\"(A-Z])", p):
            if min_words <= len(s.split()) <= max_words:
                out.append(s)
    return out


@dataclasses.dataclass
class TextSplit:
    """Disjoint calibration, validation (empty unless asked for) and evaluation paragraphs, and
    where they came from."""

    calibration: list[str]
    evaluation: list[str]
    sources: list[str]
    validation: list[str] = dataclasses.field(default_factory=list)


def split_text(
    source: str, eval_fraction: float = 0.2, validation_fraction: float = 0.0
) -> TextSplit:
    """Each file's paragraphs in order: calibration, then the last ``validation_fraction`` of
    what precedes evaluation (a plan search selects on it), then the last ``eval_fraction``."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"text.eval_fraction must be in (0, 1), got {eval_fraction}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"text.validation_fraction must be in [0, 1), got {validation_fraction}")
    calib, evals, names, valid = [], [], [], []
    for name, paras in source_texts(source):
        cut = int(round(len(paras) * (1 - eval_fraction)))
        val_cut = int(round(cut * (1 - validation_fraction)))
        calib += paras[:val_cut]
        valid += paras[val_cut:cut]
        evals += paras[cut:]
        names.append(name)
    if not calib or not evals or (validation_fraction and not valid):
        raise ValueError(f"text.source {source!r} has too little text to split")
    return TextSplit(calib, evals, names, valid)


def passages(
    tokenizer: Any, paras: list[str], min_tokens: int, max_tokens: int, seed: int = 0
) -> list[str]:
    """Consecutive windows of the text, each ``min_tokens``..``max_tokens`` tokens long (special
    tokens included; lengths drawn uniformly), cut at token boundaries. One tokenizer call."""
    text = " ".join(paras)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    specials = tokenizer.num_special_tokens_to_add()
    rng = random.Random(seed)
    out, i = [], 0
    while True:
        n = rng.randint(min_tokens, max_tokens) - specials
        if i + n > len(offsets):
            return out
        out.append(text[offsets[i][0] : offsets[i + n - 1][1]])
        i += n


def token_windows(
    tokenizer: Any, paras: list[str], length: int, count: int
) -> list[dict[str, torch.Tensor]]:
    """Up to ``count`` consecutive, non-overlapping windows of exactly ``length`` tokens of the
    text, one per batch (decoders: perplexity and KL in long context)."""
    ids = tokenizer(" ".join(paras), add_special_tokens=False, verbose=False)["input_ids"]
    out = []
    for i in range(min(count, len(ids) // length)):
        window = torch.tensor(ids[i * length : (i + 1) * length]).unsqueeze(0)  # (1, length)
        out.append({"input_ids": window, "attention_mask": torch.ones_like(window)})
    return out


def sample(items: list[str], n: int, seed: int) -> list[str]:
    """``n`` items in a fixed pseudo-random order (all of them when there are fewer)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]


def batches(
    tokenizer: Any, texts: list[str], batch_size: int, max_len: int
) -> list[dict[str, torch.Tensor]]:
    """Tokenised, padded batches; texts sorted by length first so padding stays small."""
    texts = sorted(texts, key=len)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        out.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")})
    return out
