"""Adapters that give a grafted operator the call signature of the Hugging Face module it
replaces: they turn the 4-D attention mask into the operator's ``padding_mask``, pass position
ids on to rotary embeddings, and keep the operator's decoding state inside the model's ``Cache``.

Every wrapper has ``core(x, padding_mask, positions)``: the replaced module's output from its
input, used by stage 1 to regress the teacher's captured output.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from search_spaces.ops.base import Operator


def padding_from_mask(attention_mask: torch.Tensor | None, q_len: int) -> torch.Tensor | None:
    """(B, q_len) bool, True at real tokens, from the mask a Hugging Face layer receives.

    The mask is None (no padding), 2-D (B, L_kv) or 4-D (B, 1, L_q, L_kv), bool (True = attend)
    or additive float. The last query row of a 4-D mask sees every real key, causal or not; the
    last ``q_len`` keys are the tokens of this call (earlier ones are cached)."""
    if attention_mask is None:
        return None
    row = attention_mask if attention_mask.dim() == 2 else attention_mask[:, 0, -1]
    row = row[:, -q_len:]
    real = row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
    if torch.compiler.is_exporting():  # an exported graph cannot branch on the mask's values
        return real
    return None if bool(real.all()) else real


class GraftStateLayer(DynamicLayer):
    """Cache entry of a grafted decoder layer: the operator's decoding state (a recurrent state,
    a bounded window of keys/values, or a KV cache, as the operator's ``step`` defines it) and the
    number of tokens seen, so that ``Cache.get_seq_length`` and the masks stay right."""

    def __init__(self) -> None:
        super().__init__()
        self.state = None
        self.seen = 0
        self.is_initialized = True
        self.device = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        raise RuntimeError("a grafted layer keeps its own state; it stores no keys/values")

    def get_seq_length(self) -> int:
        return self.seen

    def reset(self) -> None:
        self.state, self.seen = None, 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a grafted layer's recurrent state cannot be cropped")

    def state_bytes(self) -> int:
        """Memory held by the state: constant for recurrent operators, growing for a KV cache."""
        return _tensor_bytes(self.state)


def _tensor_bytes(state) -> int:
    """Bytes of the tensors in ``state``: a tensor, or a (named) tuple of them, nested or None."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, tuple):
        return sum(_tensor_bytes(s) for s in state)
    return 0


def state_layer(cache: Cache, layer_idx: int) -> GraftStateLayer:
    """This layer's ``GraftStateLayer`` in ``cache``, put in place on first use."""
    if cache.layer_class_to_replicate is not None:
        while len(cache.layers) <= layer_idx:
            cache.layers.append(cache.layer_class_to_replicate())
    layer = cache.layers[layer_idx]
    if not isinstance(layer, GraftStateLayer):
        if layer.get_seq_length() > 0:
            raise RuntimeError(f"cache layer {layer_idx} already holds keys/values")
        layer = cache.layers[layer_idx] = GraftStateLayer()
    return layer


class RecomputeState(NamedTuple):
    """Decoding state of an operator without ``step``: every input so far (B, S, D) and which
    of them are real tokens (B, S)."""

    x: torch.Tensor
    mask: torch.Tensor


def recompute_step(
    op: nn.Module, x: torch.Tensor, state: RecomputeState | None, padding_mask, positions
) -> tuple[torch.Tensor, RecomputeState]:
    """Decoding for an operator without ``step`` (``Operator.has_step()`` is False): keep every
    input and recompute (exact, slow)."""
    new = x.shape[1]
    mask = padding_mask if padding_mask is not None else x.new_ones(x.shape[:2], dtype=torch.bool)
    if state is not None:
        x, mask = torch.cat([state.x, x], dim=1), torch.cat([state.mask, mask], dim=1)
    y = op(x, padding_mask=None if bool(mask.all()) else mask)
    return y[:, -new:], RecomputeState(x, mask)


class DecoderMixer(nn.Module):
    """Replaces a decoder's attention module (GPT-2, Llama, Qwen2, Mistral): returns
    ``(output, None)`` like the original; with a ``Cache`` it decodes incrementally through the
    operator's ``step(x, state, padding_mask=, positions=)`` (or exact recomputation)."""

    def __init__(self, op: nn.Module, layer_idx: int) -> None:
        super().__init__()
        self.op, self.layer_idx = op, layer_idx

    def core(self, x, padding_mask=None, positions=None) -> torch.Tensor:
        return self.op(x, padding_mask=padding_mask, **_positions_kw(self.op, positions))

    def forward(
        self,
        hidden_states: torch.Tensor,
        *args,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        cache = cache if cache is not None else past_key_values
        L = hidden_states.shape[1]
        padding_mask = padding_from_mask(attention_mask, L)
        if cache is None:
            return self.core(hidden_states, padding_mask, position_ids), None
        slot = state_layer(cache, self.layer_idx)
        if position_ids is None:
            position_ids = torch.arange(slot.seen, slot.seen + L, device=hidden_states.device)[None]
        if isinstance(self.op, Operator) and self.op.has_step():
            y, slot.state = self.op.step(
                hidden_states, slot.state, padding_mask=padding_mask, positions=position_ids
            )
        else:
            y, slot.state = recompute_step(
                self.op, hidden_states, slot.state, padding_mask, position_ids
            )
        slot.seen += L
        return y, None


class PostNormMixer(nn.Module):
    """Replaces BERT's ``BertAttention`` (self-attention + dense + residual + LayerNorm):
    ``LayerNorm(op(x) + x)``, returned as ``(output, None)``."""

    def __init__(self, op: nn.Module, norm: nn.LayerNorm, dropout: float) -> None:
        super().__init__()
        self.op, self.norm, self.dropout = op, norm, nn.Dropout(dropout)

    def core(self, x, padding_mask=None, positions=None) -> torch.Tensor:
        return self.norm(self.dropout(self.op(x, padding_mask=padding_mask)) + x)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *a, **kw
    ) -> tuple[torch.Tensor, None]:
        padding_mask = padding_from_mask(attention_mask, hidden_states.shape[1])
        return self.core(hidden_states, padding_mask), None


class PostNormMlp(nn.Module):
    """Replaces BERT's ``BertOutput`` when the MLP is grafted (``BertIntermediate`` becomes the
    identity): ``LayerNorm(op(x) + x)``."""

    def __init__(self, op: nn.Module, norm: nn.LayerNorm, dropout: float) -> None:
        super().__init__()
        self.op, self.norm, self.dropout = op, norm, nn.Dropout(dropout)

    def core(self, x, padding_mask=None, positions=None) -> torch.Tensor:
        return self.norm(self.dropout(self.op(x)) + x)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.op(hidden_states)) + input_tensor)


class TokenMixer(nn.Module):
    """Replaces a module called as ``attn(x)`` on ``(B, L, D)`` tokens with no mask (a DiT
    block's attention): ``op(x)``."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def core(self, x, padding_mask=None, positions=None) -> torch.Tensor:
        return self.op(x, padding_mask=padding_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class PlainMlp(nn.Module):
    """Replaces a decoder MLP (``GPT2MLP``, ``LlamaMLP``): ``op(x)``."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def core(self, x, padding_mask=None, positions=None) -> torch.Tensor:
        return self.op(x)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.op(hidden_states)


def _positions_kw(op: nn.Module, positions: torch.Tensor | None) -> dict:
    """``positions=`` only for operators that use them (``Operator.uses_positions``; others do
    not take it)."""
    if positions is None or not (isinstance(op, Operator) and op.uses_positions):
        return {}
    return {"positions": positions}
