"""Channel mixers: the plain MLP and the GLU family (Shazeer 2020, "GLU Variants Improve
Transformer"). Both are per-token, so ``causal`` and ``padding_mask`` are accepted and ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from timm.layers import Mlp, SwiGLU, get_act_layer
from torch import nn

from search_spaces.ops.base import Operator, copy_checked, linear_flops
from search_spaces.registry import register_op

MLP_ACTIVATIONS = ("gelu", "relu", "silu", "gelu_tanh")


def hidden_width(dim: int, ratio: float, hidden: int | None) -> int:
    """``hidden`` when given (exact pretrained widths such as Llama's 11008), else
    ``int(ratio * dim)``; must be >= 1."""
    width = int(ratio * dim) if hidden is None else hidden
    if width < 1:
        raise ValueError(f"the hidden width must be >= 1, but got {width} from {ratio=}, {hidden=}")
    return width


def narrow_mlp(w: Mapping[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Keep the ``hidden`` units with the largest product of input and output weight norms."""
    ins = [k for k in w if ".fc1" in k]
    outs = [k for k in w if ".fc2" in k]
    score = w[[k for k in ins if k.endswith("weight")][0]].norm(dim=1)
    score = score * w["mlp.fc2.weight"].norm(dim=0)
    keep = score.topk(hidden).indices.sort().values
    out = {k: w[k][keep] for k in ins}
    out.update({k: w[k][:, keep] if k.endswith("weight") else w[k] for k in outs})
    return out


class ChannelMlp(Operator):
    """Base of the channel mixers: ``hidden`` units in a timm MLP ``self.mlp``."""

    hidden: int

    def init_from_mlp(self, weights: Mapping[str, torch.Tensor], host: Mapping[str, Any]) -> bool:
        """A host MLP of this operator's kind gives its weights; a narrower operator keeps the
        hidden units with the largest ``|w_in| * |w_out|`` (``narrow_mlp``)."""
        if host["name"] != self.op_name:
            return False
        if self.hidden != host["hidden"]:
            weights = narrow_mlp(weights, self.hidden)
        copy_checked(self, weights)
        return True


@register_op("mlp", kind="channel")
class MlpChannel(ChannelMlp):
    """Two-layer MLP ``fc2(act(fc1 x))`` (timm ``Mlp``), ``hidden = int(ratio * dim)``."""

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        ratio: float = 4.0,
        act: str = "gelu",
        bias: bool = True,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if act not in MLP_ACTIVATIONS:
            raise ValueError(f"`act` must be one of {MLP_ACTIVATIONS}, but got {act=}")
        self.dim, self.causal, self.hidden = dim, causal, hidden_width(dim, ratio, hidden)
        self.mlp = Mlp(dim, self.hidden, act_layer=get_act_layer(act), bias=bias)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(x)

    def flops(self, seq_len: int) -> int:
        """fc1 and fc2: ``4 L dim hidden`` (activation and bias adds not counted)."""
        return 2 * linear_flops(self.dim, self.hidden, seq_len)


class GatedMlp(ChannelMlp):
    """GLU channel mixer ``fc2(act(fc1_g x) ⊙ fc1_x x)`` on timm's ``SwiGLU``, whose separate
    ``fc1_g``/``fc1_x``/``fc2`` match Llama's ``gate_proj``/``up_proj``/``down_proj``.
    Registered subclasses only choose ``activation``."""

    activation: ClassVar[type[nn.Module]]

    def __init__(
        self,
        dim: int,
        *,
        causal: bool = False,
        ratio: float = 4.0,
        bias: bool = True,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.causal, self.hidden = dim, causal, hidden_width(dim, ratio, hidden)
        self.mlp = SwiGLU(dim, self.hidden, act_layer=self.activation, bias=bias)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(x)

    def flops(self, seq_len: int) -> int:
        """fc1_g, fc1_x and fc2: ``6 L dim hidden`` (activation, product, bias not counted)."""
        return 3 * linear_flops(self.dim, self.hidden, seq_len)


@register_op("glu", kind="channel")
class Glu(GatedMlp):
    """GLU: sigmoid gate (Dauphin et al. 2017)."""

    activation = nn.Sigmoid


@register_op("swiglu", kind="channel")
class SwiGlu(GatedMlp):
    """SwiGLU: SiLU (Swish) gate, as in Llama."""

    activation = nn.SiLU


@register_op("geglu", kind="channel")
class GeGlu(GatedMlp):
    """GEGLU: GELU gate."""

    activation = nn.GELU


@register_op("reglu", kind="channel")
class ReGlu(GatedMlp):
    """ReGLU: ReLU gate."""

    activation = nn.ReLU
