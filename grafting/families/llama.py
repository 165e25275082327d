"""Llama-style decoders (Llama, Qwen2, Mistral): pre-RMSNorm layers in ``model.layers``, RoPE
with its θ and scaling, grouped-query attention, explicit ``head_dim``, optional q/k/v bias."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting.families.base import Family, register_family
from grafting.wrappers import DecoderMixer, PlainMlp

GATES = {"silu": "swiglu", "gelu": "geglu", "relu": "reglu", "sigmoid": "glu"}


@register_family("llama")
class LlamaFamily(Family):
    model_types = ("llama", "qwen2", "mistral")
    causal = True

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def check_config(self, config: Any) -> None:
        rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope in ("dynamic", "longrope"):
            raise ValueError(
                f"rope_type={rope!r} changes its frequencies with the length; not supported"
            )
        if config.hidden_act not in GATES:
            raise ValueError(f"unsupported hidden_act {config.hidden_act!r} for a gated MLP")
        window = getattr(config, "sliding_window", None)
        if window is not None and getattr(config, "use_sliding_window", True):
            raise ValueError(f"hosts with sliding-window attention are not supported ({window=})")

    def _head_dim(self, config: Any) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def attention_hparams(self, config: Any) -> dict[str, Any]:
        qkv_bias = bool(getattr(config, "attention_bias", False))
        if config.model_type == "qwen2":
            qkv_bias = True  # Qwen2: bias on q/k/v, none on o
        out_bias = bool(getattr(config, "attention_bias", False))
        return dict(
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=self._head_dim(config),
            qkv_bias=qkv_bias,
            out_bias=out_bias,
            rope_theta=float(config.rope_parameters["rope_theta"]),
        )

    def mlp_hparams(self, config: Any) -> dict[str, Any]:
        bias = bool(getattr(config, "mlp_bias", False))
        return dict(name=GATES[config.hidden_act], hidden=config.intermediate_size, bias=bias)

    def attention_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        att = layer.self_attn
        out = {}
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            linear = getattr(att, name)
            out[f"{name}.weight"] = linear.weight
            if linear.bias is not None:
                out[f"{name}.bias"] = linear.bias
        return out

    def mlp_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        mlp = layer.mlp  # timm SwiGLU: fc1_g = gate_proj, fc1_x = up_proj, fc2 = down_proj
        out = {}
        for ours, theirs in (
            ("fc1_g", mlp.gate_proj),
            ("fc1_x", mlp.up_proj),
            ("fc2", mlp.down_proj),
        ):
            out[f"mlp.{ours}.weight"] = theirs.weight
            if theirs.bias is not None:
                out[f"mlp.{ours}.bias"] = theirs.bias
        return out

    def capture(self, layer: nn.Module, slot: str) -> tuple[nn.Module, nn.Module]:
        module = layer.self_attn if slot == "mixer" else layer.mlp
        return module, module

    def install(self, layer: nn.Module, slot: str, op: nn.Module, layer_idx: int) -> nn.Module:
        if slot == "mixer":
            layer.self_attn = DecoderMixer(op, layer_idx)
            return layer.self_attn
        layer.mlp = PlainMlp(op)
        return layer.mlp

    def rotary(self, model: nn.Module) -> tuple[torch.Tensor, float] | None:
        emb = model.model.rotary_emb
        return emb.inv_freq.detach().clone(), float(emb.attention_scaling)
