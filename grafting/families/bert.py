"""BERT-style encoders (BERT, MiniLM, all-MiniLM-L6-v2): post-norm layers in ``encoder.layer``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting.families.base import Family, register_family
from grafting.wrappers import PostNormMixer, PostNormMlp

ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "silu": "silu"}


@register_family("bert")
class BertFamily(Family):
    model_types = ("bert",)
    causal = False

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.encoder.layer

    def check_config(self, config: Any) -> None:
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                "only absolute position embeddings are supported for bert, but got "
                f"position_embedding_type={config.position_embedding_type!r}"
            )
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported bert hidden_act {config.hidden_act!r}")

    def attention_hparams(self, config: Any) -> dict[str, Any]:
        heads = config.num_attention_heads
        return dict(
            heads=heads,
            kv_heads=heads,
            head_dim=config.hidden_size // heads,
            qkv_bias=True,
            out_bias=True,
        )

    def mlp_hparams(self, config: Any) -> dict[str, Any]:
        return dict(
            name="mlp",
            hidden=config.intermediate_size,
            act=ACTIVATIONS[config.hidden_act],
            bias=True,
        )

    def attention_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        att = layer.attention
        out = {}
        for ours, theirs in (("q", att.self.query), ("k", att.self.key), ("v", att.self.value)):
            out[f"{ours}_proj.weight"], out[f"{ours}_proj.bias"] = theirs.weight, theirs.bias
        out["o_proj.weight"], out["o_proj.bias"] = att.output.dense.weight, att.output.dense.bias
        return out

    def mlp_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        fc1, fc2 = layer.intermediate.dense, layer.output.dense
        return {
            "mlp.fc1.weight": fc1.weight,
            "mlp.fc1.bias": fc1.bias,
            "mlp.fc2.weight": fc2.weight,
            "mlp.fc2.bias": fc2.bias,
        }

    def capture(self, layer: nn.Module, slot: str) -> tuple[nn.Module, nn.Module]:
        if slot == "mixer":
            return layer.attention, layer.attention
        return layer.intermediate, layer.output

    def install(self, layer: nn.Module, slot: str, op: nn.Module, layer_idx: int) -> nn.Module:
        if slot == "mixer":
            out = layer.attention.output
            layer.attention = PostNormMixer(op, out.LayerNorm, out.dropout.p)
            return layer.attention
        out = layer.output
        layer.intermediate = nn.Identity()
        layer.output = PostNormMlp(op, out.LayerNorm, out.dropout.p)
        return layer.output
