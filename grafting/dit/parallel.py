"""Depth restructuring of a DiT: every pair of sequential blocks becomes one parallel block (the
"Exploring Diffusion Transformer Designs via Grafting" paper's 28 -> 14 layers).

Both blocks of a pair see the same input ``x``; their residual updates ``a(x) - x`` and
``b(x) - x`` are concatenated and merged by a linear projection initialised to ``[I, I]``, so a
fresh pair computes ``x + (a(x) - x) + (b(x) - x)`` from the pretrained blocks, which distillation
then corrects towards the sequential ``b(a(x))``. The pair keeps both blocks' weights stacked
along a leading axis of 2 and runs them as one batched computation (``einsum`` over the pair
axis, one attention call over both), which is where a pair is faster than two blocks in a row.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from common.schedule import warmup_cosine, warmup_fraction


class ParallelPair(nn.Module):
    """Two adaLN-Zero DiT blocks on one input, merged; ``forward(x, c)`` like a ``DiTBlock``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads

        def stacked(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(2, *shape))

        self.ada_w, self.ada_b = stacked(6 * dim, dim), stacked(6 * dim)
        self.qkv_w, self.qkv_b = stacked(3 * dim, dim), stacked(3 * dim)
        self.proj_w, self.proj_b = stacked(dim, dim), stacked(dim)
        self.fc1_w, self.fc1_b = stacked(hidden, dim), stacked(hidden)
        self.fc2_w, self.fc2_b = stacked(dim, hidden), stacked(dim)
        self.merge = nn.Linear(2 * dim, dim)
        with torch.no_grad():
            self.merge.weight.copy_(torch.cat([torch.eye(dim), torch.eye(dim)], dim=1))
            self.merge.bias.zero_()

    @classmethod
    def from_blocks(cls, first: nn.Module, second: nn.Module) -> ParallelPair:
        """A pair started from two pretrained ``DiTBlock``s (their weights copied)."""
        dim, hidden = first.mlp.fc1.in_features, first.mlp.fc1.out_features
        pair = cls(dim, first.attn.num_heads, hidden).to(first.mlp.fc1.weight.dtype)
        sources = {
            "ada": "adaLN_modulation.1",
            "qkv": "attn.qkv",
            "proj": "attn.proj",
            "fc1": "mlp.fc1",
            "fc2": "mlp.fc2",
        }
        with torch.no_grad():
            for ours, theirs in sources.items():
                for kind in ("weight", "bias"):
                    tensors = [b.get_submodule(theirs).get_parameter(kind) for b in (first, second)]
                    getattr(pair, f"{ours}_{kind[0]}").copy_(torch.stack(tensors))
        return pair

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        mods = torch.einsum("bd,kod->kbo", F.silu(c), self.ada_w) + self.ada_b[:, None]
        shift1, scale1, gate1, shift2, scale2, gate2 = mods.unsqueeze(2).chunk(6, -1)  # (2,B,1,D)
        h = F.layer_norm(x, (D,), eps=1e-6) * (1 + scale1) + shift1  # (2, B, L, D)
        qkv = torch.einsum("kbld,kod->kblo", h, self.qkv_w) + self.qkv_b[:, None, None]
        q, k, v = qkv.reshape(2 * B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # (2B, heads, L, hd)
        att = att.transpose(1, 2).reshape(2, B, L, D)
        x1 = x + gate1 * (
            torch.einsum("kbld,kod->kblo", att, self.proj_w) + self.proj_b[:, None, None]
        )
        h = F.layer_norm(x1, (D,), eps=1e-6) * (1 + scale2) + shift2
        h = F.gelu(
            torch.einsum("kbld,khd->kblh", h, self.fc1_w) + self.fc1_b[:, None, None],
            approximate="tanh",
        )
        x2 = x1 + gate2 * (
            torch.einsum("kblh,kdh->kbld", h, self.fc2_w) + self.fc2_b[:, None, None]
        )
        delta = (x2 - x).permute(1, 2, 0, 3).reshape(B, L, 2 * D)  # [a(x) - x, b(x) - x]
        return x + self.merge(delta)  # (B, L, D)


def halve_depth(model: nn.Module, *, init: bool = True) -> list[ParallelPair]:
    """Replace ``model.blocks`` (in place) by parallel pairs of consecutive blocks (an odd last
    block stays as it is); returns the pairs. ``init=False`` builds the structure only."""
    blocks = list(model.blocks)
    pairs = []
    for a, b in zip(blocks[0::2], blocks[1::2], strict=False):
        if init:
            pairs.append(ParallelPair.from_blocks(a, b))
        else:
            c = model.config
            pairs.append(ParallelPair(c.hidden_size, c.num_heads, c.mlp_hidden))
    rest = blocks[2 * len(pairs) :]
    model.blocks = nn.ModuleList([*pairs, *rest])
    return pairs


@torch.no_grad()
def capture_pairs(
    teacher: nn.Module, batches: list[dict[str, torch.Tensor]]
) -> list[dict[str, torch.Tensor]]:
    """Per batch: the conditioning ``c`` and, for every pair ``i``, the input of teacher block
    ``2i`` (``x{i}``) and the output of block ``2i + 1`` (``y{i}``), kept in memory."""
    out = []
    for batch in batches:
        x = teacher.x_embedder(batch["x"]) + teacher.pos_embed  # (B, L, D)
        c = teacher.t_embedder(batch["t"]) + teacher.y_embedder(batch["y"], False)  # (B, D)
        record = {"c": c}
        for i in range(len(teacher.blocks) // 2):
            record[f"x{i}"] = x
            x = teacher.blocks[2 * i + 1](teacher.blocks[2 * i](x, c), c)
            record[f"y{i}"] = x
        out.append(record)
    return out


def train_pairs(
    pairs: list[ParallelPair],
    data: list[dict[str, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Stage 1 for pairs: each pair regresses its two teacher blocks' output from their input
    (L2), independently, on the captured batches in seeded random order."""
    start = time.perf_counter()
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0, "loss": {}}
    params = [p for pair in pairs for p in pair.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = warmup_fraction(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, steps))
    g = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {f"pair{i}": [] for i in range(len(pairs))}
    for _ in tqdm(range(steps), desc="stage 1 (pairs)", leave=False, disable=not progress):
        record = data[int(torch.randint(len(data), (1,), generator=g))]
        total = 0.0
        for i, pair in enumerate(pairs):
            err = F.mse_loss(pair(record[f"x{i}"], record["c"]), record[f"y{i}"])
            history[f"pair{i}"].append(err.item())
            total = total + err
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    window = max(1, min(10, steps // 5))
    summary = {k: {"first": h[0], "last": sum(h[-window:]) / window} for k, h in history.items()}
    return {"steps": steps, "seconds": time.perf_counter() - start, "loss": summary}
