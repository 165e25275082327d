"""The exported-model folder (written by ``python -m nas.export``), readable with this package
alone: ``arch.yaml`` (the ``Arch``) and ``model.safetensors`` (the weights of
``build_model(arch)``). Loading never imports ``supernet`` or ``nas``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from search_spaces.arch import Arch
from search_spaces.model import Model, build_model

ARCH_FILE, WEIGHTS_FILE = "arch.yaml", "model.safetensors"


def save_exported(model: Model, directory: str | os.PathLike) -> Path:
    """Write ``model.arch`` and ``model``'s weights into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.arch.save(directory / ARCH_FILE)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"signature": model.arch.signature})
    return directory


def load_exported(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Model:
    """``build_model(Arch.load(directory / "arch.yaml"))`` with the weights of
    ``directory / "model.safetensors"`` (every key and shape must match), in eval mode."""
    directory = Path(directory)
    arch_path, weights_path = directory / ARCH_FILE, directory / WEIGHTS_FILE
    for path in (arch_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"not an exported model folder: {path} is missing")
    model = build_model(Arch.load(arch_path))
    state = load_file(str(weights_path))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not match {arch_path}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{weights_path}: `{key}` has shape {tuple(value.shape)}, "
                f"but {arch_path} needs {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# timm reads the pretrained configs of the entry points it registers from their module's
# ``default_cfgs``: one entry per exported model registered in this process.
default_cfgs: dict[str, dict] = {}


def _timm_model(*, arch: Arch, **kwargs) -> Model:
    """timm's model constructor: ``build_model(arch)``. The arguments timm adds (``num_classes``,
    ``in_chans``, ``img_size``) must agree with the exported architecture."""
    h = arch.head
    fixed = {"num_classes": h.num_classes, "in_chans": h.in_chans, "img_size": h.image_size}
    square = (h.image_size, h.image_size)
    wrong = {
        k: v
        for k, v in kwargs.items()
        if not (
            fixed.get(k, object()) == v
            or (k == "img_size" and isinstance(v, tuple | list) and tuple(v) == square)
        )
    }
    if wrong:
        raise ValueError(f"an exported model is fixed ({fixed}); got {wrong}")
    return build_model(arch)


def register_timm(directory: str | os.PathLike) -> str:
    """Register the exported image classifier in ``directory`` with timm and return its name,
    ``nas_<signature>``: ``timm.create_model(name, pretrained=True)`` then builds it with the
    exported weights (``pretrained_cfg_overlay=dict(file=...)`` points it at other weights)."""
    from timm.models import build_model_with_cfg, register_model

    directory = Path(directory)
    arch = Arch.load(directory / ARCH_FILE)
    h = arch.head
    if h.kind != "image_cls":
        raise ValueError(f"timm models are image classifiers: {directory} has head.kind={h.kind!r}")
    name, weights = f"nas_{arch.signature}", str((directory / WEIGHTS_FILE).resolve())
    if default_cfgs.get(name, {}).get("file") == weights:
        return name  # already registered in this process
    default_cfgs[name] = {
        "file": weights,
        "num_classes": h.num_classes,
        "fixed_input_size": True,
        "input_size": (h.in_chans, h.image_size, h.image_size),
        "first_conv": "stem.proj",
        "classifier": "head.proj",
        "mean": (0.0,) * h.in_chans,
        "std": (1.0,) * h.in_chans,
    }

    def entry(pretrained: bool = False, **kwargs) -> Model:
        return build_model_with_cfg(_timm_model, name, pretrained, arch=arch, **kwargs)

    entry.__name__, entry.__qualname__, entry.__module__ = name, name, __name__
    register_model(entry)
    return name
