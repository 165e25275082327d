"""Supernet: activate/extract equivalence for every space, weight sharing, gradients."""

from __future__ import annotations

import random

import pytest
import torch

from search_spaces import Arch
from search_spaces.config_paths import available
from search_spaces.space import load_space
from supernet.supernet import Supernet


def example_input(arch: Arch, batch: int = 2, length: int = 21) -> torch.Tensor:
    h = arch.head
    if h.kind == "image_cls":
        return torch.randn(batch, h.in_chans, h.image_size, h.image_size)
    return torch.randint(0, h.vocab_size, (batch, length))


@pytest.fixture(scope="module", params=available("space"))
def supernet(request) -> Supernet:
    torch.manual_seed(0)
    return Supernet(load_space(request.param))


def test_extract_equals_supernet_for_many_archs(supernet: Supernet) -> None:
    space = supernet.space
    archs = [space.baseline(), space.teacher(), space.smallest()]
    archs += [space.sample(random.Random(seed)) for seed in range(12)]
    for arch in archs:
        arch = supernet.activate(arch)
        x = example_input(arch)
        supernet.eval()
        with torch.no_grad():
            y_super = supernet(x)
            y_alone = supernet.extract(arch).eval()(x)
        torch.testing.assert_close(y_alone, y_super, rtol=1e-5, atol=1e-5)


def test_extracted_model_is_independent_and_complete(supernet: Supernet) -> None:
    arch = supernet.activate(supernet.space.smallest())
    model = supernet.extract(arch)
    assert type(model).__name__ == "Model" and model.arch == arch
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in supernet.parameters()
    )
    with torch.no_grad():
        model.head.proj.weight.add_(1.0)  # editing the copy leaves the supernet untouched
    x = example_input(arch)
    supernet.eval()
    assert not torch.allclose(model.eval()(x), supernet(x))


def test_subnets_share_leading_slices() -> None:
    space = load_space("efficient_attn")
    net = Supernet(space)
    teacher, small = space.teacher(), space.smallest()
    big = net.extract(teacher).stem.embed.weight
    little = net.extract(small).stem.embed.weight
    assert little.shape[1] < big.shape[1]
    torch.testing.assert_close(little, big[:, : little.shape[1]])


def test_gradients_reach_only_the_active_slices() -> None:
    torch.manual_seed(0)
    space = load_space("efficient_attn")
    net = Supernet(space)
    arch = net.activate(space.smallest())  # dim 64 of 128, linear attention, depth 2
    net.train()
    net(example_input(arch)).square().mean().backward()
    emb = net.weights["stem/embed/weight"].grad
    assert emb[:, :64].abs().sum() > 0 and emb[:, 64:].abs().sum() == 0
    assert net.weights["layer3/mixer/softmax/q_proj/weight"].grad is None
    assert net.weights["layer0/mixer/linear/q_proj/weight"].grad.abs().sum() > 0


def test_fused_parameters_are_sliced_per_segment() -> None:
    """ssm's in_proj holds (z, x, B, C, dt): fewer heads must take each segment's head rows."""
    space = load_space("efficient_attn")
    net = Supernet(space)
    d = space.baseline().to_dict()
    for layer in d["layers"]:
        layer["mixer"] = {"name": "ssm", "heads": 2, "d_state": 16}
    arch = net.activate(Arch.from_dict(d))
    w_small = net.extract(arch).trunk.begin[0].mixer.in_proj.weight
    w_big = net.weights["layer0/mixer/ssm/in_proj/weight"]
    p = space.head_dim * 2  # the op's head_dim is the model's: d_inner = heads * head_dim
    big_d = space.head_dim * 4
    torch.testing.assert_close(w_small[p : 2 * p], w_big[big_d : big_d + p, : arch.dim])


def test_activate_rejects_archs_outside_the_space() -> None:
    space = load_space("efficient_attn")
    net = Supernet(space)
    with pytest.raises(ValueError, match="dim: 512 is not a choice"):
        net.activate(space.baseline().replace(dim=512))
