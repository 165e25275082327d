"""Input stems and output heads, one pair per ``HeadSpec.kind``.

A stem turns the raw input into tokens ``(B, L, D)``; a head turns the final tokens into the
task's output. Both count their own FLOPs so ``Model.flops`` is complete, and both name in
``requires`` the ``HeadSpec`` fields they need (``Arch`` checks them). What ``Arch`` derives from a
kind comes from its classes too: ``head.causal`` (language models see only the past), the stem's
``grid(spec)`` (the token grid of image inputs, else None) and ``check(spec)`` (a consistency
rule between fields, as an error message). A kind is registered with
``@register_head(kind, stem=...)`` on its head class; ``get_head(kind)`` is the ``(stem, head)``
pair, ``list_heads()`` the kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from common.registry import Registry
from search_spaces.ops.base import linear_flops

if TYPE_CHECKING:  # Arch validates head kinds against this module's registry
    from search_spaces.arch import Arch, HeadSpec

HeadPair = tuple[type[nn.Module], type[nn.Module]]  # (stem, head)
HEADS: Registry[HeadPair] = Registry("head kind")


def register_head(
    kind: str, *, stem: type[nn.Module]
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``HeadSpec(kind=kind)`` builds ``stem`` and then the decorated head.
    ``stem`` should subclass ``Stem``; the head may set ``causal = True`` (default False)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        HEADS.add(kind, (stem, cls))
        return cls

    return decorator


def get_head(kind: str) -> HeadPair:
    """The ``(stem, head)`` classes of a head kind; raises ``ValueError`` listing the kinds."""
    return HEADS.lookup(kind)


def list_heads() -> list[str]:
    """The registered head kinds."""
    return HEADS.names()


def required_fields(kind: str) -> tuple[str, ...]:
    """The ``HeadSpec`` fields a head kind needs (its stem's, then its head's)."""
    stem, head = get_head(kind)
    return tuple(dict.fromkeys((*stem.requires, *head.requires)))


class LearnedPositions(nn.Module):
    """Adds a learned absolute position embedding (GPT-2/BERT style)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.trunc_normal_(self.embedding, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding[: x.shape[1]]


def _positions(arch: Arch) -> nn.Module:
    return (
        LearnedPositions(arch.max_len, arch.dim)
        if arch.pos_embedding == "learned"
        else nn.Identity()
    )


class Stem(nn.Module):
    """Base of input stems: what ``Arch`` asks of a stem beyond building it."""

    requires: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def grid(spec: HeadSpec) -> tuple[int, int] | None:
        """The token grid (rows, columns) of image inputs; None for sequences."""
        return None

    @staticmethod
    def check(spec: HeadSpec) -> tuple[str, str] | None:
        """``(field, message)`` if ``spec``'s fields contradict each other, else None."""
        return None


class TokenStem(Stem):
    """Token ids (B, L) -> embeddings (B, L, D)."""

    requires: ClassVar[tuple[str, ...]] = ("vocab_size", "max_len")

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.max_len = arch.max_len
        self.embed = nn.Embedding(arch.head.vocab_size, arch.dim)
        self.positions = _positions(arch)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"expected integer token ids of shape (B, L), got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds the model's max_len {self.max_len}"
            )
        return self.positions(self.embed(tokens))

    def flops(self, seq_len: int) -> int:
        return 0


class PatchStem(Stem):
    """Images (B, C, H, W) -> patch tokens (B, H/p * W/p, D), row-major over the grid (ViT)."""

    requires: ClassVar[tuple[str, ...]] = ("image_size", "patch_size", "in_chans")

    @staticmethod
    def grid(spec: HeadSpec) -> tuple[int, int]:
        side = spec.image_size // spec.patch_size
        return (side, side)

    @staticmethod
    def check(spec: HeadSpec) -> tuple[str, str] | None:
        if spec.image_size % spec.patch_size:
            return (
                "head.patch_size",
                "`image_size % patch_size == 0` must hold, "
                f"got image_size={spec.image_size}, patch_size={spec.patch_size}",
            )
        return None

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        h = arch.head
        self.proj = nn.Conv2d(h.in_chans, arch.dim, kernel_size=h.patch_size, stride=h.patch_size)
        self.positions = _positions(arch)
        self._flops = linear_flops(h.in_chans * h.patch_size**2, arch.dim, arch.max_len)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images)  # (B, D, h, w)
        return self.positions(x.flatten(2).transpose(1, 2))  # (B, h*w, D)

    def flops(self, seq_len: int) -> int:
        return self._flops


@register_head("lm", stem=TokenStem)
class LMHead(nn.Module):
    """Tokens (B, L, D) -> next-token logits (B, L, V)."""

    requires: ClassVar[tuple[str, ...]] = ("vocab_size",)
    causal: ClassVar[bool] = True  # every mixer of a language model sees only earlier tokens

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.proj = nn.Linear(arch.dim, arch.head.vocab_size, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x)

    def flops(self, seq_len: int) -> int:
        return linear_flops(self.proj.in_features, self.proj.out_features, seq_len)


@register_head("seq_cls", stem=TokenStem)
@register_head("image_cls", stem=PatchStem)
class ClassifierHead(nn.Module):
    """Tokens (B, L, D) -> class logits (B, C), by the mean over real (unpadded) tokens."""

    requires: ClassVar[tuple[str, ...]] = ("num_classes",)
    causal: ClassVar[bool] = False

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.proj = nn.Linear(arch.dim, arch.head.num_classes)
        nn.init.zeros_(self.proj.bias)
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is None:
            pooled = x.mean(1)  # (B, D)
        else:
            w = padding_mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled = (x * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.proj(pooled)

    def flops(self, seq_len: int) -> int:
        return linear_flops(self.proj.in_features, self.proj.out_features, 1)


HEAD_TYPES = HEADS  # the former name: ``HEAD_TYPES[kind]`` is the (stem, head) pair
