"""DiT (Peebles & Xie, 2023): a class-conditional diffusion transformer whose parameter names and
shapes are those of the original release (facebookresearch/DiT ``models.py``), so its checkpoints
load unchanged (``grafting.dit.io.load_dit``).

Grafting contract: every ``DiTBlock`` calls ``block.attn(x)`` and ``block.mlp(x)`` on ``(B, L, D)``
tensors (after the adaLN modulation, before the gated residual), so a forward hook on either
captures the slot's input and output, and any ``(B, L, D) -> (B, L, D)`` module can replace it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.layers import Attention, Mlp, PatchEmbed
from torch import nn

# name: (depth, hidden_size, patch_size, num_heads), exactly the original's DiT_models table.
_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
PRESETS: dict[str, dict[str, Any]] = {
    f"DiT-{size}/{p}": {"depth": d, "hidden_size": h, "patch_size": p, "num_heads": n}
    for size, (d, h, n) in _SIZES.items()
    for p in (2, 4, 8)
}
# Our offline teacher: 16x16 digits (grafting.dit.data), patch 2 -> an 8x8 grid of 64 tokens;
# 0.72M parameters, sized so that `python -m grafting.dit.train` (2000 steps) learns all ten
# classes on one CPU thread in the time the README gives (a deeper, wider one is slower per image
# and learns later).
PRESETS["DiT-digits"] = {
    "input_size": 16,
    "patch_size": 2,
    "in_channels": 1,
    "hidden_size": 96,
    "depth": 4,
    "num_heads": 4,
    "num_classes": 10,
}


@dataclass
class DiTConfig:
    """One DiT architecture; defaults are the original's (DiT-XL/2 on 256x256 ImageNet latents)."""

    model_type: ClassVar[str] = "dit"  # what grafting code dispatches on; also in config.json

    input_size: int = 32  # image (or latent) side; the token grid is input_size / patch_size
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # > 0 adds the null class (row num_classes) used by CFG
    num_classes: int = 1000
    learn_sigma: bool = True  # output 2C channels: epsilon, then the variance interpolation

    def __post_init__(self) -> None:
        ints = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads")
        for name in (*ints, "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DiTConfig.{name} must be a positive integer, but got {value!r}")
        if self.input_size % self.patch_size:
            raise ValueError(
                "`input_size % patch_size == 0` must hold, but got "
                f"input_size={self.input_size}, patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(
                "`hidden_size % num_heads == 0` and `hidden_size % 4 == 0` (2-D sin-cos positions) "
                f"must hold, but got hidden_size={self.hidden_size}, num_heads={self.num_heads}"
            )
        if not 0 <= self.class_dropout_prob < 1:
            raise ValueError(
                f"DiTConfig.class_dropout_prob must be in [0, 1), but got {self.class_dropout_prob!r}"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"DiTConfig.mlp_ratio must be positive, but got {self.mlp_ratio!r}")

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DiTConfig:
        """The preset ``name`` (``DiT-XL/2``, ..., ``DiT-digits``) with ``overrides`` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; available: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"config model_type must be {cls.model_type!r}, but got {model_type!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DiTConfig keys {unknown}; valid: {sorted(names)}")
        return cls(**data)

    def preset_name(self) -> str | None:
        """The first preset whose fields this config has (``DiT-XL/2`` for any input size), if any."""
        fields = dataclasses.asdict(self)
        return next((n for n, p in PRESETS.items() if p.items() <= fields.items()), None)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift  # (B, L, D) with (B, 1, D) shift and scale


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """The original's fixed 2-D sin-cos positions (MAE's ``get_2d_sincos_pos_embed``), (grid², dim):
    the first half of the channels encodes the column, the second half the row."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1).double() * omega  # (grid², D/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (grid², D/2)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the (possibly fractional) timestep, then a 2-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
        args = t[:, None].float() * freqs[None]  # (B, dim/2)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class embeddings; with ``dropout_prob > 0`` row ``num_classes`` is the null class, and in
    training labels are replaced by it with that probability (classifier-free guidance)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if force_drop_ids is not None:
            drop = force_drop_ids == 1
        elif train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            return self.embedding_table(labels)
        return self.embedding_table(torch.where(drop, self.num_classes, labels))


class DiTBlock(nn.Module):
    """adaLN-Zero block: two gated residual lines around ``attn`` and ``mlp`` (the graft slots)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=_gelu_tanh)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mods = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)  # 6 x (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, L, D)


def _gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, L, p*p*C_out)


class DiT(nn.Module):
    """Diffusion transformer: ``forward(x, t, y)`` maps noisy images ``(B, C, H, W)``, timesteps
    ``(B,)`` and labels ``(B,)`` to ``(B, C_out, H, W)`` (epsilon, then the variance channels)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.in_channels, self.out_channels = c.in_channels, c.out_channels
        self.patch_size, self.num_heads, self.learn_sigma = c.patch_size, c.num_heads, c.learn_sigma
        self.x_embedder = PatchEmbed(c.input_size, c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob)
        # Fixed sin-cos positions; a frozen Parameter as in the original, so it is in the state dict.
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches, c.hidden_size), False)
        self.blocks = nn.ModuleList(
            DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio) for _ in range(c.depth)
        )
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, c.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """All of the initialisation (the original's): Xavier linears, zero biases, N(0, 0.02)
        label and timestep embeddings, and adaLN-Zero: every block's modulation and the output
        layer start at zero, so each block is the identity and the model outputs 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        grid = self.config.input_size // self.patch_size
        self.pos_embed.copy_(sincos_2d(self.config.hidden_size, grid).unsqueeze(0))
        w = self.x_embedder.proj.weight  # like an nn.Linear on the flattened patch
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero = [b.adaLN_modulation[-1] for b in self.blocks]
        for m in [*zero, self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, p*p*C) tokens -> (B, C, H, W) images."""
        p, c = self.patch_size, self.out_channels
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed  # (B, L, D), L = H * W / p²
        c = self.t_embedder(t) + self.y_embedder(y, self.training)  # (B, D)
        for block in self.blocks:
            x = block(x, c)  # (B, L, D)
        x = self.final_layer(x, c)  # (B, L, p*p*C_out)
        return self.unpatchify(x)  # (B, C_out, H, W)

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        guided_channels: int | None = None,
    ) -> torch.Tensor:
        """The original's batched classifier-free guidance: ``x``, ``t``, ``y`` hold the
        conditional half then the unconditional half (``y = num_classes``, the null class); only
        the first half of ``x`` is used. Guidance mixes the first ``guided_channels`` output
        channels, by default all of epsilon (``in_channels``; the original release guides 3 of
        its 4 latent channels "for exact reproducibility"); the rest comes from each half."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        k = self.in_channels if guided_channels is None else guided_channels
        eps, rest = out[:, :k], out[:, k:]
        cond, uncond = eps.chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)


def forward_flops(config: DiTConfig) -> int:
    """Multiply-adds x 2 of one forward pass for one image, from per-operator formulas
    (``torch.utils.flop_counter`` counts nothing for CPU attention); norms, activations and the
    sinusoidal features are left out."""
    c, n, d = config, config.num_patches, config.hidden_size
    patch = n * c.in_channels * c.patch_size**2 * d
    cond = 256 * d + d * d
    block = 6 * d * d + n * (4 * d * d + 2 * d * c.mlp_hidden) + 2 * n * n * d
    final = 2 * d * d + n * d * c.patch_size**2 * c.out_channels
    return 2 * (patch + cond + c.depth * block + final)
