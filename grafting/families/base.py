"""A model family: where a Hugging Face architecture keeps its layers, attention and MLP, and how
their weights map onto operators from ``search_spaces.ops``.

Contract (every family):
- ``layers(model)`` is the ``nn.ModuleList`` of transformer layers, in order;
- ``attention_hparams(config)`` are the hyperparameters an attention-like operator needs to take
  the pretrained Q/K/V/O weights unchanged (``heads``, ``kv_heads``, ``head_dim``, bias flags);
- ``attention_weights(layer)`` / ``mlp_weights(layer)`` return the pretrained tensors under the
  parameter names of the operator (``q_proj.weight``, ``mlp.fc1.weight``, ...);
- ``capture(layer, slot)`` names the modules whose input and output a slot replaces (stage 1 hooks);
- ``install(layer, slot, op, layer_idx)`` swaps the grafted operator in, wrapped so that it takes
  the call signature of the module it replaces; it returns the wrapper, whose ``core(x,
  padding_mask, positions)`` computes the captured output from the captured input.

A family registers itself with ``@register_family(name)`` on its class (one stateless instance is
kept); the Hugging Face ``model_type`` values it lists must not be claimed by another family.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from common.registry import Registry

SLOTS = ("mixer", "mlp")


class Family(abc.ABC):
    """Base class of the model families; see the module docstring for the contract."""

    name: str
    model_types: tuple[str, ...]
    causal: bool

    @abc.abstractmethod
    def layers(self, model: nn.Module) -> nn.ModuleList: ...

    @abc.abstractmethod
    def attention_hparams(self, config: Any) -> dict[str, Any]: ...

    @abc.abstractmethod
    def mlp_hparams(self, config: Any) -> dict[str, Any]:
        """``{"name": channel op of the host MLP, "hidden": width, ...}``."""

    @abc.abstractmethod
    def attention_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def mlp_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def capture(self, layer: nn.Module, slot: str) -> tuple[nn.Module, nn.Module]:
        """(module whose first input is the slot's input, module whose output is the slot's)."""

    @abc.abstractmethod
    def install(self, layer: nn.Module, slot: str, op: nn.Module, layer_idx: int) -> nn.Module: ...

    def check_config(self, config: Any) -> None:
        """Raise ``ValueError`` for a configuration this family cannot graft exactly."""
        return None

    def rotary(self, model: nn.Module) -> tuple[torch.Tensor, float] | None:
        """(inv_freq, attention scaling) of the host's rotary embedding, or None without RoPE."""
        return None

    def dim(self, config: Any) -> int:
        return int(config.hidden_size)

    def context(self, config: Any) -> dict[str, Any]:
        """Model-wide values an operator may take (``create_op``'s ``context``)."""
        max_len = getattr(config, "max_position_embeddings", None) or config.n_positions
        return {"causal": self.causal, "max_len": int(max_len)}

    def num_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))


FAMILY_REGISTRY: Registry[Family] = Registry("model family", key=type)


def register_family(name: str) -> Callable[[type[Family]], type[Family]]:
    """Class decorator: make a ``Family`` subclass available to ``get_family`` as ``name`` and for
    every Hugging Face ``model_type`` in its ``model_types``."""

    def decorator(cls: type[Family]) -> type[Family]:
        model_types = getattr(cls, "model_types", None)
        if not model_types or not all(isinstance(t, str) for t in model_types):
            raise ValueError(f"family {name!r} must set `model_types`, but got {model_types=}")
        for other in FAMILY_REGISTRY.values():
            taken = sorted(set(model_types) & set(other.model_types))
            if taken and type(other) is not cls:
                raise ValueError(
                    f"model_type {taken[0]!r} of family {name!r} is already claimed by family "
                    f"{other.name!r}"
                )
        FAMILY_REGISTRY.add(name, cls())  # raises (before ``name`` is set) if the name is taken
        cls.name = name
        return cls

    return decorator


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a module was called with, positionally or as ``hidden_states=``."""
    return args[0] if args else kwargs["hidden_states"]


def conv1d_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``Conv1D`` stores (in, out); ``nn.Linear`` stores (out, in)."""
    return weight.t().contiguous()
