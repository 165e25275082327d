"""The Gaussian diffusion: the schedule and q_sample against their closed forms, the original's
timestep spacing, samplers that recover a known x_0 under the exact denoiser, determinism under a
generator, and the hybrid loss training the variance only."""

from __future__ import annotations

import math

import pytest
import torch

from grafting.dit.diffusion import GaussianDiffusion, denoiser, sample_images, space_timesteps
from grafting.dit.model import DiT, DiTConfig


def test_linear_schedule_and_q_sample_closed_form():
    d = GaussianDiffusion()
    assert d.num_timesteps == 1000
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(0.02)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 999])
    for i, ti in enumerate(t.tolist()):
        betas = [1e-4 + (0.02 - 1e-4) * k / 999 for k in range(ti + 1)]
        abar = math.prod(1 - b for b in betas)
        expected = math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i]
        torch.testing.assert_close(d.q_sample(x0, t, noise)[i], expected, rtol=1e-5, atol=1e-6)


def test_spacing_is_the_originals():
    assert space_timesteps(1000, 1000) == list(range(1000))
    assert space_timesteps(1000, 4) == [0, 333, 666, 999]
    spaced = space_timesteps(1000, 50)
    assert len(spaced) == 50 and spaced[:4] == [0, 20, 41, 61] and spaced[-1] == 999
    d = GaussianDiffusion()
    r = d.respace(50)
    torch.testing.assert_close(r.alphas_cumprod, d.alphas_cumprod[spaced])
    assert r.timestep_map.tolist() == spaced
    with pytest.raises(ValueError, match=r"sampling steps must be in \[1, 1000\], but got 0"):
        d.respace(0)


def exact_denoiser(d: GaussianDiffusion, x_star: torch.Tensor, learn_sigma: bool):
    """The optimal epsilon prediction when the data is the single image ``x_star``."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (x - abar.sqrt() * x_star) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1) if learn_sigma else eps

    return fn


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("learn_sigma", [True, False])
@pytest.mark.parametrize("steps", [1, 10])
def test_samplers_recover_the_only_image(sampler, learn_sigma, steps):
    d = GaussianDiffusion(learn_sigma=learn_sigma)
    x_star = torch.rand(1, 1, 4, 4) * 1.6 - 0.8
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 1, 4, 4, generator=g)
    fn = exact_denoiser(d, x_star, learn_sigma)
    out = d.sample(fn, noise, sampler=sampler, steps=steps, generator=g)
    torch.testing.assert_close(out, x_star.expand(3, -1, -1, -1), rtol=0, atol=1e-4)


def tiny_model() -> DiT:
    torch.manual_seed(0)
    cfg = dict(input_size=8, patch_size=4, in_channels=1, hidden_size=16, depth=1, num_heads=2)
    model = DiT(DiTConfig(**cfg, num_classes=3))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_is_a_function_of_the_seed(sampler):
    model, d = tiny_model(), GaussianDiffusion()
    labels = torch.tensor([0, 1, 2, 1])
    kw = dict(sampler=sampler, steps=5, cfg_scale=2.5)
    a = sample_images(model, d, labels, seed=3, **kw)
    b = sample_images(model, d, labels, seed=3, batch_size=4, **kw)
    c = sample_images(model, d, labels, seed=4, **kw)
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1


def test_denoiser_guides_epsilon_against_the_null_class():
    model = tiny_model()
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 600]), torch.tensor([0, 2])
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 3))
    assert torch.equal(denoiser(model, y, 1.0)(x, t), cond)
    guided = denoiser(model, y, 2.0)(x, t)
    torch.testing.assert_close(guided[:, :1], uncond[:, :1] + 2 * (cond - uncond)[:, :1])
    torch.testing.assert_close(guided[:, 1:], cond[:, 1:])
    model.config.class_dropout_prob = 0.0
    with pytest.raises(ValueError, match="cfg_scale=2.0 needs a model trained with a null class"):
        denoiser(model, y, 2.0)


def test_vb_term_trains_only_the_variance():
    d = GaussianDiffusion(learn_sigma=True)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    out = torch.randn(4, 2, 4, 4, requires_grad=True)
    terms = d.training_losses(lambda x, t: out, x0, torch.tensor([0, 1, 300, 999]))
    assert set(terms) == {"mse", "vb", "loss"} and terms["vb"].shape == (4,)
    assert torch.isfinite(terms["loss"]).all()
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert grad[:, :1].abs().max() == 0 and grad[:, 1:].abs().max() > 0
    plain = GaussianDiffusion(learn_sigma=False)
    assert set(plain.training_losses(lambda x, t: out[:, :1], x0, torch.tensor([5] * 4))) == {
        "mse",
        "loss",
    }
