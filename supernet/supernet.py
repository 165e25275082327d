"""``Supernet``: every architecture of a space in one set of shared weights.

How weights are shared:

- Every parameter an architecture can use has a *store key*: its weight slot (``layer2``, or
  ``begin0``/``middle1``/``end0`` in looped spaces), its part of the block (``mixer``, ``channel``,
  ``norm1``, ``norm2``), the operator name, and the parameter's own name, e.g.
  ``layer2.mixer.softmax.q_proj.weight``. One tensor per key, at the largest shape any
  architecture of the space needs: one set of weights per operator type per layer.
- A smaller architecture takes the leading slice of each tensor: fewer heads at fixed head
  dimension, a narrower MLP, a smaller embedding dimension (elastic width); a shallower one uses
  the first slots (elastic depth); looped groups reuse their slots' weights on every pass.
  Fused parameters (an ``in_proj`` holding several projections) are sliced per segment, as the
  operator declares in ``fused_segments()``.
- The active architecture runs as ``build_model(arch)`` (a cached *template*) with the sliced
  tensors substituted through ``torch.func.functional_call``. So the supernet computes exactly
  what the extracted standalone model computes, and gradients flow into the shared tensors.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call

from search_spaces import Arch, HeadSpec, LayerSpec, LoopSpec, OpSpec, build_model
from search_spaces.model import Model
from search_spaces.space import SearchSpace

Segments = tuple[int, tuple[int, ...]]  # (axis, segment sizes)


def _storage_name(key: str) -> str:
    return key.replace(".", "/")  # ParameterDict keys cannot contain dots


def named_slot_parts(
    model: Model, arch: Arch, space: SearchSpace
) -> Iterator[tuple[str, nn.Module]]:
    """(store prefix, module) for every part of ``model`` that owns parameters."""
    t = model.trunk
    blocks = [*t.begin, *t.loop.middle, *t.end]
    for block, slot, layer in zip(blocks, space.slot_names(arch), arch.layers, strict=True):
        yield f"{slot}.mixer.{layer.mixer.name}", block.mixer
        yield f"{slot}.channel.{layer.channel.name}", block.channel
        for norm in ("norm1", "norm2"):
            if hasattr(block, norm):
                yield f"{slot}.{norm}.{layer.norm.name}", getattr(block, norm)
    yield "stem", model.stem
    yield f"final_norm.{arch.layers[-1].norm.name}", model.final_norm
    yield "head", model.head


def named_store_params(
    model: Model, arch: Arch, space: SearchSpace
) -> Iterator[tuple[str, str, nn.Parameter, Segments | None]]:
    """(name in ``model``, store key, parameter, fused segments) for every parameter of ``model``."""
    prefix_of = {id(m): n for n, m in model.named_modules()}
    for store_prefix, module in named_slot_parts(model, arch, space):
        segments = module.fused_segments() if hasattr(module, "fused_segments") else {}
        for name, param in module.named_parameters():
            yield (
                f"{prefix_of[id(module)]}.{name}",
                f"{store_prefix}.{name}",
                param,
                segments.get(name),
            )
    loop = model.trunk.loop
    for name, param in loop.named_parameters(recurse=False):  # hyper-connection matrices
        yield f"trunk.loop.{name}", f"loop.{name}", param, None


def leading_views(
    big: torch.Tensor, shape: torch.Size, big_seg: Segments | None, small_seg: Segments | None
) -> list[torch.Tensor]:
    """Views of ``big`` whose concatenation along the fused axis is its leading ``shape`` slice
    (one view unless the parameter is fused, then one per segment)."""
    if big_seg is None:
        return [big[tuple(slice(0, n) for n in shape)]]
    axis, views = big_seg[0], []
    for part, size in zip(big.split(list(big_seg[1]), dim=axis), small_seg[1], strict=True):
        part_shape = list(shape)
        part_shape[axis] = size
        views.append(part[tuple(slice(0, n) for n in part_shape)])
    return views


def take_leading(
    big: torch.Tensor, shape: torch.Size, big_seg: Segments | None, small_seg: Segments | None
) -> torch.Tensor:
    """The leading ``shape`` slice of ``big`` (per segment along a fused axis)."""
    views = leading_views(big, shape, big_seg, small_seg)
    return views[0] if len(views) == 1 else torch.cat(views, dim=big_seg[0])


def put_leading(
    big: torch.Tensor, value: torch.Tensor, big_seg: Segments | None, small_seg: Segments | None
) -> None:
    """Write ``value`` where ``take_leading`` would read it."""
    views = leading_views(big, value.shape, big_seg, small_seg)
    sources = [value] if small_seg is None else value.split(list(small_seg[1]), dim=small_seg[0])
    for view, src in zip(views, sources, strict=True):
        view.copy_(src)


class Supernet(nn.Module):
    """All architectures of ``space`` (with the given task ``head``) in shared weights.

    ``activate(arch)`` selects the subnet that ``forward`` runs; ``extract(arch)`` returns the
    standalone ``build_model(arch)`` holding the inherited weights (equal outputs).
    """

    def __init__(
        self, space: SearchSpace, head: HeadSpec | None = None, *, template_cache: int = 64
    ) -> None:
        super().__init__()
        self.space = space
        self.head_spec = head or space.default_head
        self.weights = nn.ParameterDict()
        self._segments: dict[str, Segments | None] = {}
        self._templates: OrderedDict[str, tuple[Model, list]] = OrderedDict()  # not submodules
        self._cache_size = template_cache
        self._build_store()
        self.active: Arch | None = None
        self.activate(space.teacher(self.head_spec))

    # -- building the shared store -----------------------------------------------------------------
    def covering_archs(self) -> list[Arch]:
        """Architectures that together use every store key at its largest shape: maximal width,
        depth and loop groups, each operator variant of the space in every slot."""
        sp = self.space
        mixers = [OpSpec(o.name, v) for o in sp.mixers for v in o.variants()]
        channels = [OpSpec(o.name, v) for o in sp.channels for v in o.variants()]
        norms = [OpSpec(o.name, v) for o in sp.norms for v in o.variants()]
        block = "sequential" if "sequential" in sp.blocks else sp.blocks[0]
        if sp.loop is None:
            depth, loop = max(sp.depths), None
        else:
            loop = LoopSpec(
                **{k: max(sp.loop[k]) for k in ("begin", "middle", "end", "repeats", "streams")}
            )
            depth = loop.begin + loop.middle + loop.end
        archs = []
        for i in range(max(len(mixers), len(channels), len(norms))):
            layer = LayerSpec(
                mixers[i % len(mixers)], channels[i % len(channels)], norms[i % len(norms)]
            )
            archs.append(
                Arch(
                    dim=max(sp.dims),
                    head_dim=sp.head_dim,
                    layers=(layer,) * depth,
                    head=self.head_spec,
                    block=block,
                    norm_placement=sp.norm_placements[0],
                    pos_embedding=sp.pos_embedding,
                    loop=loop,
                )
            )
        return archs

    def _build_store(self) -> None:
        shapes: dict[str, list[int]] = {}
        inits: dict[str, tuple[torch.Tensor, Segments | None]] = {}
        for arch in self.covering_archs():
            model = build_model(arch)
            for _, key, param, seg in named_store_params(model, arch, self.space):
                old = shapes.get(key)
                shapes[key] = (
                    list(param.shape)
                    if old is None
                    else [max(a, b) for a, b in zip(old, param.shape, strict=True)]
                )
                if key not in inits or param.numel() > inits[key][0].numel():
                    inits[key] = (param.detach().clone(), seg)
                prev = self._segments.get(key)
                self._segments[key] = (
                    seg
                    if prev is None or seg is None
                    else (seg[0], tuple(map(max, prev[1], seg[1])))
                )
        for key, shape in shapes.items():
            tensor = torch.zeros(shape)
            init, init_seg = inits[key]
            # the largest initial value, placed where that architecture will read it
            put_leading(tensor, init, self._segments[key], init_seg)
            self.weights[_storage_name(key)] = nn.Parameter(tensor)

    # -- selecting a subnet ----------------------------------------------------------------------
    def _template(self, arch: Arch) -> tuple[Model, list]:
        sig = arch.signature
        if sig in self._templates:
            self._templates.move_to_end(sig)
            return self._templates[sig]
        model = build_model(arch)
        mapping = []
        for name, key, param, seg in named_store_params(model, arch, self.space):
            mapping.append((name, _storage_name(key), param.shape, self._segments[key], seg))
        self._templates[sig] = (model, mapping)
        while len(self._templates) > self._cache_size:
            self._templates.popitem(last=False)
        return self._templates[sig]

    def activate(self, arch: Arch) -> Arch:
        """Select ``arch`` (within the space, with this supernet's head) for ``forward``."""
        if arch.head != self.head_spec:
            arch = arch.replace(head=self.head_spec)
        self.space.validate(arch)
        self._template(arch)
        self.active = arch
        return arch

    def subnet_params(self, arch: Arch | None = None) -> dict[str, torch.Tensor]:
        """The active (or given) architecture's parameters, as slices of the shared tensors."""
        _, mapping = self._template(arch or self.active)
        return {
            name: take_leading(self.weights[store], shape, big_seg, small_seg)
            for name, store, shape, big_seg, small_seg in mapping
        }

    def forward(
        self, inputs: torch.Tensor, *, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        template, _ = self._template(self.active)
        template.train(self.training)
        return functional_call(
            template, self.subnet_params(), (inputs,), {"padding_mask": padding_mask}, strict=False
        )

    def extract(self, arch: Arch | None = None) -> Model:
        """A standalone ``build_model(arch)`` with the inherited weights (and the subnet's own
        buffers, e.g. recalibrated batch statistics)."""
        arch = self.activate(arch) if arch is not None else self.active
        template, _ = self._template(arch)
        model = copy.deepcopy(template)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.subnet_params(arch).items()}
            missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {name for name, _ in model.named_buffers()}:
            raise RuntimeError(
                f"weight inheritance mismatch: missing={missing}, unexpected={unexpected}"
            )
        return model.train(self.training)

    @torch.no_grad()
    def recalibrate(self, arch: Arch, batches: itertools.Iterable[dict]) -> None:
        """Re-estimate batch-norm statistics of ``arch`` on ``batches`` (a subnet's statistics
        differ from any other's, so they are kept per subnet, in its template)."""
        self.activate(arch)
        template, _ = self._template(arch)
        norms = [m for m in template.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        was_training = self.training
        self.train()
        for batch in batches:
            self(batch["inputs"], padding_mask=batch.get("padding_mask"))
        self.train(was_training)
