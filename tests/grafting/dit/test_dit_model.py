"""The DiT has the original release's parameter names and shapes (facebookresearch/DiT
``models.py``), its presets, its fixed positions and adaLN-Zero initialisation, and the graft
slots ``block.attn`` / ``block.mlp`` on (B, L, D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from grafting.dit.model import PRESETS, DiT, DiTConfig, forward_flops, sincos_2d

# From the original models.py: DiT_XL_2() = DiT(input_size=32, patch_size=2, in_channels=4,
# hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4, class_dropout_prob=0.1,
# num_classes=1000, learn_sigma=True); timm PatchEmbed / Attention(qkv_bias=True) / Mlp.
XL2_OUTER = {
    "pos_embed": (1, 256, 1152),
    "x_embedder.proj.weight": (1152, 4, 2, 2),
    "x_embedder.proj.bias": (1152,),
    "t_embedder.mlp.0.weight": (1152, 256),
    "t_embedder.mlp.0.bias": (1152,),
    "t_embedder.mlp.2.weight": (1152, 1152),
    "t_embedder.mlp.2.bias": (1152,),
    "y_embedder.embedding_table.weight": (1001, 1152),
    "final_layer.linear.weight": (32, 1152),  # p * p * 2C = 2 * 2 * 8
    "final_layer.linear.bias": (32,),
    "final_layer.adaLN_modulation.1.weight": (2304, 1152),
    "final_layer.adaLN_modulation.1.bias": (2304,),
}
XL2_BLOCK = {
    "attn.qkv.weight": (3456, 1152),
    "attn.qkv.bias": (3456,),
    "attn.proj.weight": (1152, 1152),
    "attn.proj.bias": (1152,),
    "mlp.fc1.weight": (4608, 1152),
    "mlp.fc1.bias": (4608,),
    "mlp.fc2.weight": (1152, 4608),
    "mlp.fc2.bias": (1152,),
    "adaLN_modulation.1.weight": (6912, 1152),
    "adaLN_modulation.1.bias": (6912,),
}
ORIGINAL_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}


def tiny(**kw) -> DiTConfig:
    base = dict(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=2, num_heads=4)
    return DiTConfig(**{**base, "num_classes": 5, **kw})


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def test_xl2_state_dict_is_the_originals():
    with torch.device("meta"):
        model = DiT(DiTConfig.from_preset("DiT-XL/2"))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = dict(XL2_OUTER)
    for i in range(28):
        expected.update({f"blocks.{i}.{k}": v for k, v in XL2_BLOCK.items()})
    assert shapes == expected
    assert sum(p.numel() for p in model.parameters()) == 675_129_632  # the original's count
    assert not model.pos_embed.requires_grad and "pos_embed" in model.state_dict()


def test_presets_are_the_originals():
    for size, (depth, hidden, heads) in ORIGINAL_SIZES.items():
        for p in (2, 4, 8):
            c = DiTConfig.from_preset(f"DiT-{size}/{p}")
            assert (c.depth, c.hidden_size, c.num_heads, c.patch_size) == (depth, hidden, heads, p)
            assert c.preset_name() == f"DiT-{size}/{p}"
    assert len(PRESETS) == 13 and DiTConfig.from_preset("DiT-digits").num_patches == 64
    assert DiTConfig.model_type == "dit" and DiTConfig().to_dict()["model_type"] == "dit"


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="unknown DiT preset 'DiT-M/2'; available: DiT-XL/2"):
        DiTConfig.from_preset("DiT-M/2")
    with pytest.raises(ValueError, match="got hidden_size=30, num_heads=4"):
        tiny(hidden_size=30)
    with pytest.raises(ValueError, match="got input_size=9, patch_size=2"):
        tiny(input_size=9)


def _mae_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed, as the original DiT uses it (numpy)."""

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)))
    return np.concatenate([one(dim // 2, g[0]), one(dim // 2, g[1])], axis=1)


@pytest.mark.parametrize("dim,grid", [(32, 4), (128, 8), (1152, 16)])
def test_positions_are_maes_sincos(dim, grid):
    expected = torch.from_numpy(_mae_sincos(dim, grid)).float()
    torch.testing.assert_close(sincos_2d(dim, grid), expected, rtol=0, atol=1e-6)


def test_adaln_zero_blocks_are_the_identity_at_init():
    torch.manual_seed(0)
    model = DiT(tiny()).eval()
    x, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)
    with torch.no_grad():  # a non-zero output layer, so the output shows what the blocks do
        model.final_layer.linear.weight.normal_()
        model.final_layer.adaLN_modulation[-1].weight.normal_()
    args = torch.randn(3, 2, 8, 8), torch.tensor([1, 500, 999]), torch.tensor([0, 4, 5])
    full = model(*args)
    model.blocks = nn.ModuleList()
    assert full.abs().sum() > 0 and torch.equal(model(*args), full)


def test_graft_slots_are_attn_and_mlp_on_tokens():
    model = randomize(DiT(tiny())).eval()
    args = torch.randn(2, 2, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    seen = {}
    block = model.blocks[1]
    for name in ("attn", "mlp"):
        getattr(block, name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: (i[0].shape, o.shape)})
        )
    model(*args)
    assert seen == {s: (torch.Size([2, 16, 32]), torch.Size([2, 16, 32])) for s in ("attn", "mlp")}
    before = model(*args)
    block.attn = nn.Linear(32, 32)  # any (B, L, D) -> (B, L, D) module fits the slot
    assert model(*args).shape == before.shape and not torch.equal(model(*args), before)


def test_cfg_scale_one_is_the_conditional_prediction():
    model = randomize(DiT(tiny())).eval()
    x, t, y = torch.randn(3, 2, 8, 8), torch.tensor([5, 400, 999]), torch.tensor([0, 3, 4])
    null = torch.full_like(y, 5)
    args = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])
    cond, uncond = model(x, t, y), model(x, t, null)
    torch.testing.assert_close(model.forward_with_cfg(*args, 1.0)[:3], cond)
    guided = model.forward_with_cfg(*args, 3.0)
    torch.testing.assert_close(guided[:3, :2], uncond[:, :2] + 3 * (cond - uncond)[:, :2])
    torch.testing.assert_close(guided[:3, 2:], cond[:, 2:])  # the variance channels: unguided


def test_label_dropout_uses_the_null_row():
    model = DiT(tiny(class_dropout_prob=0.5))
    assert model.y_embedder.embedding_table.num_embeddings == 6
    assert DiT(tiny(class_dropout_prob=0.0)).y_embedder.embedding_table.num_embeddings == 5
    y = torch.tensor([0, 1])
    emb = model.y_embedder(y, train=False, force_drop_ids=torch.tensor([1, 0]))
    torch.testing.assert_close(emb[0], model.y_embedder.embedding_table.weight[5])


def test_forward_flops_formula_matches_the_flop_counter():
    config = tiny()
    with FlopCounterMode(display=False) as counter:
        DiT(config)(torch.randn(1, 2, 8, 8), torch.tensor([1]), torch.tensor([0]))
    attention_core = 2 * 2 * config.depth * config.num_patches**2 * config.hidden_size
    assert forward_flops(config) - attention_core == counter.get_total_flops()
