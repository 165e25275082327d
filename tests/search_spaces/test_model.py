"""build_model: presets build and run; an architecture file alone rebuilds the model; loops."""

from __future__ import annotations

import pytest
import torch

from search_spaces import Arch, build_model, load_arch
from search_spaces.config_paths import available


def example_input(arch: Arch, batch: int = 2, length: int = 24) -> torch.Tensor:
    h = arch.head
    if h.kind == "image_cls":
        return torch.randn(batch, h.in_chans, h.image_size, h.image_size)
    return torch.randint(0, h.vocab_size, (batch, length))


def output_shape(arch: Arch, batch: int = 2, length: int = 24) -> tuple[int, ...]:
    h = arch.head
    return (batch, length, h.vocab_size) if h.kind == "lm" else (batch, h.num_classes)


@pytest.mark.parametrize("name", available("arch"))
def test_preset_builds_runs_and_trains(name: str) -> None:
    torch.manual_seed(0)
    arch = load_arch(name)
    model = build_model(arch)
    x = example_input(arch)
    y = model(x)
    assert y.shape == output_shape(arch) and torch.isfinite(y).all()
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert model.flops() > 0 and model.num_params() > 0


@pytest.mark.parametrize("name", available("arch"))
def test_arch_file_alone_rebuilds_the_same_model(name: str, tmp_path) -> None:
    arch = load_arch(name)
    torch.manual_seed(0)
    model = build_model(arch).eval()
    path = arch.save(tmp_path / "arch.yaml")
    rebuilt = build_model(Arch.load(path)).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    x = example_input(arch)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_lm_is_causal_end_to_end() -> None:
    model = build_model(load_arch("hybrid_softmax_linear")).eval()
    x = torch.randint(0, 256, (1, 40))
    x2 = x.clone()
    x2[:, 25:] = (x2[:, 25:] + 7) % 256
    torch.testing.assert_close(model(x)[:, :25], model(x2)[:, :25])


def test_hyper_connections_start_equal_to_plain_looping() -> None:
    hyper = load_arch("looped")
    plain = hyper.replace(loop={**hyper.loop.to_dict(), "streams": 1})
    torch.manual_seed(0)
    m_hyper = build_model(hyper).eval()
    m_plain = build_model(plain).eval()
    missing, unexpected = m_plain.load_state_dict(m_hyper.state_dict(), strict=False)
    assert not missing and set(unexpected) == {
        "trunk.loop.read",
        "trunk.loop.mix",
        "trunk.loop.write",
    }
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(m_hyper(x), m_plain(x), rtol=1e-5, atol=1e-5)


def test_loop_shares_weights() -> None:
    arch = load_arch("looped")
    unrolled = Arch.from_dict({**arch.to_dict(), "loop": None})
    # the looped model holds the weights of its 4 distinct blocks (applied 8 times) plus the
    # hyper-connection read (2), mix (2x2) and write (2) parameters
    assert build_model(arch).num_params() - 8 == build_model(unrolled).num_params()
    assert build_model(arch).flops(64) > build_model(unrolled).flops(64)


def test_padding_mask_classifier_ignores_padded_tokens() -> None:
    torch.manual_seed(0)
    model = build_model(load_arch("classifier_transformer")).eval()
    x = torch.randint(0, 64, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[:, 12:] = False
    x2 = x.clone()
    x2[:, 12:] = 0
    torch.testing.assert_close(model(x, padding_mask=mask), model(x2, padding_mask=mask))
