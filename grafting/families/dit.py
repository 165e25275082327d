"""DiT (diffusion transformers, the original release's layout; ``grafting.dit.model``): adaLN-Zero
blocks in ``model.blocks``, each calling ``block.attn(x)`` (timm ``Attention``: fused ``qkv`` with
bias, ``proj``) and ``block.mlp(x)`` (timm ``Mlp``, tanh GELU) on modulated tokens. Tokens are the
patch grid of the image, row-major, so 2-D operators get ``grid``; attention sees both sides."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting.families.base import Family, register_family
from grafting.wrappers import PlainMlp, TokenMixer


@register_family("dit")
class DiTFamily(Family):
    model_types = ("dit",)
    causal = False

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.blocks

    def dim(self, config: Any) -> int:
        return int(config.hidden_size)

    def context(self, config: Any) -> dict[str, Any]:
        side = config.input_size // config.patch_size
        return {"causal": False, "max_len": side * side, "grid": (side, side)}

    def attention_hparams(self, config: Any) -> dict[str, Any]:
        return dict(
            heads=config.num_heads,
            kv_heads=config.num_heads,
            head_dim=config.hidden_size // config.num_heads,
            qkv_bias=True,
            out_bias=True,
        )

    def mlp_hparams(self, config: Any) -> dict[str, Any]:
        return dict(name="mlp", hidden=config.mlp_hidden, act="gelu_tanh", bias=True)

    def attention_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        att = layer.attn  # qkv: (3 D, D), rows q then k then v, as timm's Attention splits them
        (qw, kw, vw), (qb, kb, vb) = att.qkv.weight.chunk(3), att.qkv.bias.chunk(3)
        return {
            "q_proj.weight": qw,
            "q_proj.bias": qb,
            "k_proj.weight": kw,
            "k_proj.bias": kb,
            "v_proj.weight": vw,
            "v_proj.bias": vb,
            "o_proj.weight": att.proj.weight,
            "o_proj.bias": att.proj.bias,
        }

    def mlp_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        mlp = layer.mlp
        return {
            "mlp.fc1.weight": mlp.fc1.weight,
            "mlp.fc1.bias": mlp.fc1.bias,
            "mlp.fc2.weight": mlp.fc2.weight,
            "mlp.fc2.bias": mlp.fc2.bias,
        }

    def capture(self, layer: nn.Module, slot: str) -> tuple[nn.Module, nn.Module]:
        module = layer.attn if slot == "mixer" else layer.mlp
        return module, module

    def install(self, layer: nn.Module, slot: str, op: nn.Module, layer_idx: int) -> nn.Module:
        if slot == "mixer":
            layer.attn = TokenMixer(op)
            return layer.attn
        layer.mlp = PlainMlp(op)
        return layer.mlp
