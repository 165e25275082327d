"""What an architecture is: the operator library, the ``Arch`` spec and ``build_model``.

Public API::

    list_ops()            registered operator names by kind
    get_op(name)          the operator class registered as ``name``
    register_op(name, kind=...)   decorator for your own operators
    Arch                  the architecture spec (``Arch.load(path)``, ``arch.save(path)``)
    load_arch(name_or_path)       a preset from ``conf/arch/`` or an architecture file
    build_model(arch)     a plain ``nn.Module``
    load_exported(dir)    a model exported by ``python -m nas.export`` (arch.yaml + safetensors)
"""

from search_spaces import ops  # noqa: F401  (registers every operator)
from search_spaces.arch import Arch, HeadSpec, LayerSpec, LoopSpec, OpSpec
from search_spaces.config_paths import find_config
from search_spaces.exported import load_exported, save_exported
from search_spaces.model import Model, build_model
from search_spaces.registry import create_op, get_op, list_ops, register_op


def load_arch(name_or_path: str) -> Arch:
    """An ``Arch`` from a preset name in ``conf/arch/`` (or a user config dir) or a file path."""
    return Arch.load(find_config("arch", name_or_path))


__all__ = [
    "Arch",
    "HeadSpec",
    "LayerSpec",
    "LoopSpec",
    "Model",
    "OpSpec",
    "build_model",
    "create_op",
    "get_op",
    "list_ops",
    "load_arch",
    "load_exported",
    "register_op",
    "save_exported",
]
