"""The head registry: ``@register_head(kind, stem=...)`` makes a (stem, head) pair available to
``Arch`` and ``build_model``; unknown kinds list the valid ones."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from search_spaces import Arch, build_model
from search_spaces.heads import (
    HEAD_TYPES,
    HEADS,
    PatchStem,
    TokenStem,
    get_head,
    list_heads,
    register_head,
    required_fields,
)


class LastTokenHead(nn.Module):
    """A user's head: class logits from the last token only."""

    requires: ClassVar[tuple[str, ...]] = ("num_classes",)

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.proj = nn.Linear(arch.dim, arch.head.num_classes)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x[:, -1])  # (B, C)

    def flops(self, seq_len: int) -> int:
        return 2 * self.proj.in_features * self.proj.out_features


def test_register_head_is_found_by_kind_and_builds() -> None:
    try:
        register_head("last_cls", stem=TokenStem)(LastTokenHead)
        assert "last_cls" in list_heads() and get_head("last_cls") == (TokenStem, LastTokenHead)
        assert required_fields("last_cls") == ("vocab_size", "max_len", "num_classes")
        head = {"kind": "last_cls", "vocab_size": 16, "num_classes": 3, "max_len": 8}
        layer = {"mixer": {"name": "softmax", "heads": 2}, "channel": {"name": "mlp"}}
        arch = Arch.from_dict({"dim": 16, "head": head, "layers": [layer]})
        out = build_model(arch)(torch.randint(0, 16, (2, 8)))
        assert out.shape == (2, 3)
        with pytest.raises(ValueError, match=r"Arch\.head\.num_classes"):
            Arch.from_dict({"dim": 16, "head": {**head, "num_classes": 0}, "layers": [layer]})
    finally:
        HEADS.remove("last_cls")
    with pytest.raises(
        ValueError, match=r"^unknown head kind 'last_cls'; valid names: image_cls, lm, seq_cls$"
    ):
        get_head("last_cls")


@pytest.mark.parametrize("kind", list_heads())
def test_every_registered_head_names_its_fields(kind: str) -> None:
    stem, head = get_head(kind)
    assert HEAD_TYPES[kind] == (stem, head)  # the former name still works
    assert issubclass(stem, nn.Module) and issubclass(head, nn.Module)
    assert required_fields(kind)


class NextTokenHead(LastTokenHead):
    """A user's causal head: the registration, not the kind's name, makes the model causal."""

    causal: ClassVar[bool] = True


class SquarePatchStem(PatchStem):
    """A user's stem with its own field rule: images must hold at least four patches a side."""

    @staticmethod
    def check(spec) -> tuple[str, str] | None:
        return (
            ("head.image_size", "needs 4 patches a side")
            if spec.image_size < 4 * spec.patch_size
            else None
        )


def test_causality_grid_and_field_rules_come_from_the_registered_classes() -> None:
    layer = {"mixer": {"name": "softmax", "heads": 2}, "channel": {"name": "mlp"}}
    text = {"vocab_size": 16, "num_classes": 3, "max_len": 8}
    image = {"image_size": 8, "patch_size": 2, "in_chans": 1, "num_classes": 3}
    try:
        register_head("next_cls", stem=TokenStem)(NextTokenHead)
        register_head("last_cls", stem=TokenStem)(LastTokenHead)
        register_head("grid_cls", stem=SquarePatchStem)(LastTokenHead)
        causal = Arch.from_dict(
            {"dim": 16, "head": {"kind": "next_cls", **text}, "layers": [layer]}
        )
        plain = Arch.from_dict({"dim": 16, "head": {"kind": "last_cls", **text}, "layers": [layer]})
        assert causal.causal and not plain.causal and causal.grid is None
        grid = Arch.from_dict({"dim": 16, "head": {"kind": "grid_cls", **image}, "layers": [layer]})
        assert grid.grid == (4, 4) and grid.max_len == 16 and not grid.causal
        with pytest.raises(ValueError, match=r"Arch\.head\.image_size.*4 patches a side"):
            Arch.from_dict(
                {
                    "dim": 16,
                    "head": {"kind": "grid_cls", **image, "patch_size": 4},
                    "layers": [layer],
                }
            )
    finally:
        for kind in ("next_cls", "last_cls", "grid_cls"):
            HEADS.remove(kind)
    assert Arch.from_dict({"dim": 16, "head": {"kind": "lm", **text}, "layers": [layer]}).causal
