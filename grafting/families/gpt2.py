"""GPT-2: pre-norm decoder layers in ``transformer.h``, fused ``c_attn`` Conv1D projections."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting.families.base import Family, conv1d_to_linear, register_family
from grafting.wrappers import DecoderMixer, PlainMlp

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
ACTIVATIONS.update(relu="relu", silu="silu")


@register_family("gpt2")
class GPT2Family(Family):
    model_types = ("gpt2",)
    causal = True

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.transformer.h

    def check_config(self, config: Any) -> None:
        if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
            raise ValueError(
                "gpt2 grafting needs attention scaled by 1/sqrt(head_dim): got "
                f"scale_attn_weights={config.scale_attn_weights}, "
                f"scale_attn_by_inverse_layer_idx={config.scale_attn_by_inverse_layer_idx}"
            )
        if config.add_cross_attention:
            raise ValueError("gpt2 with cross-attention is not supported")
        if config.activation_function not in ACTIVATIONS:
            raise ValueError(f"unsupported gpt2 activation_function {config.activation_function!r}")

    def attention_hparams(self, config: Any) -> dict[str, Any]:
        heads = config.n_head
        return dict(
            heads=heads,
            kv_heads=heads,
            head_dim=config.n_embd // heads,
            qkv_bias=True,
            out_bias=True,
        )

    def mlp_hparams(self, config: Any) -> dict[str, Any]:
        hidden = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        act = ACTIVATIONS[config.activation_function]
        return dict(name="mlp", hidden=hidden, act=act, bias=True)

    def attention_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        att = layer.attn
        w = conv1d_to_linear(att.c_attn.weight)  # (3 D, D): rows of q, k, v
        out = dict(
            zip(("q_proj.weight", "k_proj.weight", "v_proj.weight"), w.chunk(3, dim=0), strict=True)
        )
        out.update(
            zip(
                ("q_proj.bias", "k_proj.bias", "v_proj.bias"), att.c_attn.bias.chunk(3), strict=True
            )
        )
        out["o_proj.weight"] = conv1d_to_linear(att.c_proj.weight)
        out["o_proj.bias"] = att.c_proj.bias
        return out

    def mlp_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        mlp = layer.mlp
        return {
            "mlp.fc1.weight": conv1d_to_linear(mlp.c_fc.weight),
            "mlp.fc1.bias": mlp.c_fc.bias,
            "mlp.fc2.weight": conv1d_to_linear(mlp.c_proj.weight),
            "mlp.fc2.bias": mlp.c_proj.bias,
        }

    def capture(self, layer: nn.Module, slot: str) -> tuple[nn.Module, nn.Module]:
        module = layer.attn if slot == "mixer" else layer.mlp
        return module, module

    def install(self, layer: nn.Module, slot: str, op: nn.Module, layer_idx: int) -> nn.Module:
        if slot == "mixer":
            layer.attn = DecoderMixer(op, layer_idx)
            return layer.attn
        layer.mlp = PlainMlp(op)
        return layer.mlp
