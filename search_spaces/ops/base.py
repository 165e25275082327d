"""The operator contract and small helpers shared by every operator family.

The contract is the docstring of ``Operator`` and of its methods; ``search_spaces.testing.
check_operator(name)`` checks a registered operator against it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class Operator(nn.Module, abc.ABC):
    """Base class of every registered operator (mixer, channel mixer or norm).

    - Constructor ``(dim, *, causal=False, <hparams>)``; model-wide values (``head_dim``,
      ``grid``, ``max_len``) are keyword arguments that ``build_model`` passes only to operators
      that take them. ``supports_causal = False`` marks an operator with no causal form (its
      constructor refuses ``causal=True``).
    - ``forward`` and ``flops`` are required; ``step`` (incremental decoding) is optional: an
      operator implements it or inherits the default, which raises (``has_step()`` tells which).
    - ``init_from_attention`` / ``init_from_mlp`` start an operator grafted into a pretrained
      model from the host's weights; the defaults do nothing (the operator keeps its own
      initialisation) and grafting calls them without knowing which operator it holds.
    """

    op_name: str
    op_kind: str
    supports_causal: bool = True

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``x`` (B, L, D) to (B, L, D).

        - ``padding_mask``: (B, L) bool, True at real tokens, or None (every token is real). A
          padded position contributes nothing to any other position's output; its own output is
          unspecified but finite.
        - ``causal=True`` (constructor): the output at position t depends only on inputs at
          positions <= t.
        - Neither ``x`` nor ``padding_mask`` is modified in place, nor are parameters; only
          running statistics (a norm's, in training) may change.
        - Deterministic: the same weights and inputs give the same output; gradients reach
          ``x`` and every parameter used.
        - An operator whose ``uses_positions`` is True (attention with rotary embeddings) also
          takes ``positions=`` (B or 1, L), each token's position (0..L-1 when not given).
        """

    @property
    def uses_positions(self) -> bool:
        """Whether ``forward`` takes ``positions=`` and its output depends on them."""
        return False

    @abc.abstractmethod
    def flops(self, seq_len: int) -> int:
        """Analytic forward FLOPs for one sequence of ``seq_len`` tokens (a multiply-add counts
        2), counting what the implementation computes and respecting causality."""

    def counted_flops(self, seq_len: int) -> int:
        """The part of ``flops(seq_len)`` that ``torch.utils.flop_counter.FlopCounterMode``
        sees on CPU: matrix products, linears and convolutions; not
        ``scaled_dot_product_attention`` (counted as 0 on CPU), FFTs or elementwise work.
        ``check_operator`` compares the two. The default, all of ``flops``, fits an operator
        made of matrix products only."""
        return self.flops(seq_len)

    def step(
        self,
        x: torch.Tensor,
        state: tuple | None,
        *,
        padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple | None]:
        """Causal incremental decoding (optional; only for ``causal=True``).

        ``x`` (B, T, D) are the T tokens that follow those summarised by ``state`` (None before
        the first call); ``padding_mask`` (B, T) and ``positions`` (B or 1, T) describe these
        tokens only (``positions`` is ignored by operators without rotary embeddings). Returns
        their outputs (B, T, D) and the new state. The state is the operator's own
        ``NamedTuple`` of tensors (a field may be None, or a smaller ``NamedTuple``), opaque to
        the caller: pass it back unchanged. Calls in any split of a sequence (a prompt, then
        one token at a time) give the outputs of ``forward`` on the whole sequence, at its real
        positions. Decoders without ``step`` recompute over every token kept so far."""
        raise NotImplementedError(f"operator {self.op_name!r} has no incremental decoding (step)")

    @classmethod
    def has_step(cls) -> bool:
        """Whether the operator implements ``step``."""
        return cls.step is not Operator.step

    @classmethod
    def hparams_from_attention(
        cls, host: Mapping[str, Any], requested: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Hyperparameters to take from a host attention layer this operator replaces when
        grafted: ``host`` holds ``heads``, ``kv_heads``, ``head_dim``, bias flags (and
        ``rope_theta``), ``requested`` the plan's own hyperparameters (which win afterwards).
        Default: none."""
        return {}

    def init_from_attention(
        self, weights: Mapping[str, torch.Tensor], host: Mapping[str, Any]
    ) -> bool:
        """Start from the host attention's ``weights`` (``q_proj.weight``, ..., ``o_proj.bias``
        in the Hugging Face Llama layout) with ``host`` as in ``hparams_from_attention``; True
        if the operator was initialised. ``ValueError`` when the layouts cannot match. Default:
        keep the operator's own initialisation (False)."""
        return False

    def init_from_mlp(self, weights: Mapping[str, torch.Tensor], host: Mapping[str, Any]) -> bool:
        """Start from the host MLP's ``weights`` (under this operator's parameter names) with
        ``host`` = ``{"name": the host MLP's operator name, "hidden": its width, ...}``; True if
        the operator was initialised. Default: keep the operator's own initialisation (False)."""
        return False

    def use_host_rotary(self, inv_freq: torch.Tensor, scaling: float) -> bool:
        """Take a grafting host's rotary frequencies ``inv_freq`` (head_dim / 2,) and attention
        ``scaling`` (RoPE variants such as Llama 3's); True if the operator has rotary
        embeddings and took them, ``ValueError`` if their sizes differ. Default: the operator has
        none (False)."""
        return False

    def fused_segments(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Parameters that concatenate several tensors along one axis: ``{name: (axis, sizes)}``.

        Weight sharing takes a smaller operator's weights as the leading slice of a larger one's;
        a fused parameter (e.g. one ``in_proj`` producing z, x, B, C) is sliced per segment
        instead. Operators without fused parameters keep this default."""
        return {}


def copy_checked(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``module``'s parameters of the same names (nanoGPT-style: the key
    set and every shape are checked before anything is written); ``ValueError`` otherwise."""
    own = dict(module.named_parameters())
    missing = sorted(set(tensors) - set(own))
    if missing:
        raise ValueError(f"operator has no parameter {missing[0]!r} to initialise")
    for name, t in tensors.items():
        if own[name].shape != t.shape:
            raise ValueError(
                f"shape of {name} is {tuple(own[name].shape)}, host gives {tuple(t.shape)}"
            )
    with torch.no_grad():
        for name, t in tensors.items():
            own[name].copy_(t)


def zero_padded(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` (B, L, ...) with the positions where ``padding_mask`` is False set to zero."""
    if padding_mask is None:
        return x
    shape = padding_mask.shape + (1,) * (x.dim() - padding_mask.dim())
    return x * padding_mask.reshape(shape).to(x.dtype)


def linear_flops(in_features: int, out_features: int, tokens: int, bias: bool = False) -> int:
    """FLOPs of ``nn.Linear`` applied to ``tokens`` rows (bias adds are not counted)."""
    return 2 * in_features * out_features * tokens


def causal_pairs(seq_len: int) -> int:
    """Number of (query, key) pairs with key <= query: L (L + 1) / 2."""
    return seq_len * (seq_len + 1) // 2
