"""The Gaussian diffusion of the original DiT (``diffusion/`` there, from OpenAI's ADM/IDDPM):
a linear beta schedule 1e-4..0.02 over 1000 steps, an epsilon-predicting model, and with
``learn_sigma`` the learned variance range (the model's second half of channels ``v`` in [-1, 1]
interpolates the log variance between the posterior's and ``beta_t``).

Training loss (``training_losses``): the epsilon MSE, plus with ``learn_sigma`` the variational
bound term (in bits) computed with the mean frozen, so it trains only the variance, exactly as
the original's hybrid ``LossType.MSE`` loss. Sampling (``sample``): DDPM ancestral sampling or
DDIM (eta = 0) on ``steps`` evenly spaced timesteps (the original's ``space_timesteps``), with
classifier-free guidance on epsilon (``denoiser``). Every random draw comes from the
``torch.Generator`` passed in, so a sample is a function of the generator's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

SAMPLERS = ("ddim", "ddpm")
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> model output


def linear_betas(num_timesteps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear schedule, scaled so that other step counts keep its shape (float64)."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * start, scale * end, num_timesteps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``count`` evenly strided timesteps of ``0..num_timesteps-1`` (the original's rounding)."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"sampling steps must be in [1, {num_timesteps}], but got {count!r}")
    stride = 1.0 if count == 1 else (num_timesteps - 1) / (count - 1)
    idx, out = 0.0, []
    for _ in range(count):
        out.append(round(idx))
        idx += stride
    return sorted(set(out))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (
        -1 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp()
    )


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood (nats) of ``x`` in [-1, 1], discretised to 256 levels, under a Gaussian."""

    def cdf(v: torch.Tensor) -> torch.Tensor:  # ADM's tanh approximation of the normal CDF
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    inv_std = torch.exp(-log_scales)
    cdf_plus = cdf(inv_std * (x - means + 1 / 255))
    cdf_min = cdf(inv_std * (x - means - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    inner = torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    return torch.where(x < -0.999, log_cdf_plus, inner)


class GaussianDiffusion:
    """Schedules and the forward/reverse processes over ``len(betas)`` steps. ``timestep_map``
    gives the model's timestep for each step (the identity, or the kept steps once respaced)."""

    def __init__(
        self,
        betas: torch.Tensor | None = None,
        *,
        learn_sigma: bool = True,
        timestep_map: torch.Tensor | None = None,
    ) -> None:
        b = linear_betas() if betas is None else betas.double()
        self.betas, self.learn_sigma, self.num_timesteps = b, learn_sigma, len(b)
        self.timestep_map = torch.arange(len(b)) if timestep_map is None else timestep_map
        ac = torch.cumprod(1 - b, 0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        self.alphas_cumprod, self.alphas_cumprod_prev = ac, ac_prev
        self.posterior_variance = b * (1 - ac_prev) / (1 - ac)
        # log clipped: the posterior variance is 0 at t = 0 (a 1-step process has only beta)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = (
            torch.cat([pv[1:2], pv[1:]]) if len(b) > 1 else b
        ).log()
        self.posterior_mean_coef1 = b * ac_prev.sqrt() / (1 - ac)
        self.posterior_mean_coef2 = (1 - ac_prev) * (1 - b).sqrt() / (1 - ac)

    def respace(self, steps: int) -> GaussianDiffusion:
        """The same process on ``steps`` evenly spaced timesteps (for sampling)."""
        use = torch.tensor(space_timesteps(self.num_timesteps, steps))
        ac = self.alphas_cumprod[use]
        betas = 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
        return GaussianDiffusion(
            betas, learn_sigma=self.learn_sigma, timestep_map=self.timestep_map[use]
        )

    @staticmethod
    def _at(arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` as a (B, 1, 1, 1) tensor of ``x``'s dtype and device."""
        return arr[t.cpu()].to(device=x.device, dtype=x.dtype).view(-1, *[1] * (x.dim() - 1))

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)."""
        noise = torch.randn_like(x0) if noise is None else noise
        ac = self._at(self.alphas_cumprod, t, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x0
        mean = mean + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_log_variance_clipped, t, x_t)

    def p_mean_variance(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from the model output: mean, log variance and the x_0 prediction."""
        c = x_t.shape[1]
        eps = out[:, :c]
        if self.learn_sigma:
            frac = (out[:, c:] + 1) / 2  # the model's [-1, 1] -> [min, max] log variance
            min_log = self._at(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._at(self.betas.log(), t, x_t)
            log_var = frac * max_log + (1 - frac) * min_log
        else:  # "fixed large", the original's choice without learned sigma
            pv, b = self.posterior_variance, self.betas
            large = torch.cat([pv[1:2], b[1:]]) if len(b) > 1 else b
            log_var = self._at(large.log(), t, x_t).expand_as(x_t)
        ac = self._at(self.alphas_cumprod, t, x_t)
        x0 = (x_t - (1 - ac).sqrt() * eps) / ac.sqrt()
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, x_t, t)
        return {"mean": mean, "log_variance": log_var, "pred_xstart": x0}

    def training_losses(
        self, model: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-image losses at timesteps ``t``: ``mse`` (epsilon), ``vb`` (with learn_sigma) and
        their sum ``loss``, each of shape (B,)."""
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.timestep_map[t.cpu()].to(t.device))
        c = x0.shape[1]
        terms = {"mse": ((noise - out[:, :c]) ** 2).mean(dim=(1, 2, 3))}
        if self.learn_sigma:  # the bound trains the variance only: the mean is frozen
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
            terms["vb"] = self._vb_bits(frozen, x0, x_t, t)
        terms["loss"] = terms["mse"] + terms.get("vb", 0)
        return terms

    def _vb_bits(self, out, x0, x_t, t) -> torch.Tensor:
        """One term of the variational bound, in bits per dimension: KL(q || p) for t > 0, the
        decoder's negative log-likelihood at t = 0."""
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        p = self.p_mean_variance(out, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])
        nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
        bits = torch.where((t == 0).view(-1, 1, 1, 1), nll, kl)
        return bits.mean(dim=(1, 2, 3)) / math.log(2.0)

    @torch.no_grad()
    def sample(
        self,
        model: ModelFn,
        noise: torch.Tensor,
        *,
        sampler: str = "ddim",
        steps: int = 50,
        generator: torch.Generator | None = None,
        clip_denoised: bool = True,
    ) -> torch.Tensor:
        """Denoise ``noise`` (x_T) over ``steps`` spaced steps with DDPM or DDIM (eta = 0);
        DDPM's per-step noise is drawn from ``generator`` (on its device, then moved)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
        d = self.respace(steps)
        x = noise
        for i in reversed(range(d.num_timesteps)):
            t = torch.full((len(x),), i, dtype=torch.long, device=x.device)
            out = model(x, d.timestep_map[i].expand(len(x)).to(x.device))
            p = d.p_mean_variance(out, x, t, clip_denoised)
            if sampler == "ddpm":
                z = torch.randn(x.shape, generator=generator, device=_device(generator))
                x = p["mean"] + (i > 0) * (0.5 * p["log_variance"]).exp() * z.to(x)
            else:  # DDIM, eta = 0: re-derive epsilon from the (clipped) x_0 prediction
                ac, ac_prev = d._at(d.alphas_cumprod, t, x), d._at(d.alphas_cumprod_prev, t, x)
                eps = (x - ac.sqrt() * p["pred_xstart"]) / (1 - ac).sqrt()
                x = p["pred_xstart"] * ac_prev.sqrt() + (1 - ac_prev).sqrt() * eps
        return x


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def denoiser(model: nn.Module, y: torch.Tensor, cfg_scale: float = 1.0) -> ModelFn:
    """``(x, t) -> output`` of a class-conditional DiT on labels ``y``; with ``cfg_scale != 1``
    the conditional and null-class passes are batched and mixed on epsilon (``forward_with_cfg``)."""
    if cfg_scale == 1.0:
        return lambda x, t: model(x, t, y)
    config = model.config
    if config.class_dropout_prob <= 0:
        raise ValueError(
            f"cfg_scale={cfg_scale} needs a model trained with a null class, but it has "
            f"class_dropout_prob={config.class_dropout_prob}"
        )
    y2 = torch.cat([y, torch.full_like(y, config.num_classes)])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), y2, cfg_scale)[: len(x)]

    return guided


@torch.no_grad()
def sample_images(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    clip_denoised: bool = True,
) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] of classes ``labels``, a function of ``seed``: one CPU
    generator draws the starting noise of every image, then each batch's DDPM noise."""
    config = model.config
    shape = (config.in_channels, config.input_size, config.input_size)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), *shape, generator=g)
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size].to(device)
        x = noise[start : start + batch_size].to(device)
        fn = denoiser(model, y, cfg_scale)
        out.append(
            diffusion.sample(
                fn, x, sampler=sampler, steps=steps, generator=g, clip_denoised=clip_denoised
            ).cpu()
        )
    return torch.cat(out).clamp(-1, 1)
