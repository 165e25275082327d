"""The report of a DiT graft: teacher vs grafted samples (Fréchet distance in a digit
classifier's feature space and conditional accuracy, next to the held-out real floor), the
denoising-loss gap at fixed timesteps on held-out images, the latency of one sampling step timed
side by side, parameters, and the sample grids a person can look at."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from common.atomic import atomic_path
from grafting.dit.data import digits
from grafting.dit.diffusion import GaussianDiffusion, denoiser
from grafting.dit.metric import classifier, conditional_accuracy, frechet_distance
from grafting.dit.sample import class_grid, save_grid
from grafting.report import count_params, time_side_by_side

GRIDS = ("teacher.png", "grafted.png", "side_by_side.png")


@torch.no_grad()
def denoising_loss(
    model: nn.Module, timesteps: list[int], batch: int = 256, seed: int = 0
) -> dict[int, float]:
    """Epsilon MSE on the held-out images at each fixed timestep, the same noise for every model."""
    x0, y = digits("heldout")
    x0, y = x0[:batch], y[:batch]
    diffusion = GaussianDiffusion(learn_sigma=model.config.learn_sigma)
    out = {}
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + t))
        tt = torch.full((len(x0),), t)
        x_t = diffusion.q_sample(x0, tt, noise)
        eps = model(x_t, tt, y)[:, : x0.shape[1]]
        out[t] = float(((eps - noise) ** 2).mean())
    return out


def step_latency(
    teacher: nn.Module,
    student: nn.Module,
    batch: int,
    cfg_scale: float,
    rounds: int,
    min_run_time: float,
) -> dict[str, float]:
    """One denoising step (with classifier-free guidance: a doubled batch) of ``batch`` images,
    host and grafted timed in alternating rounds (``grafting.report.time_side_by_side``)."""
    c = teacher.config
    x = torch.randn(batch, c.in_channels, c.input_size, c.input_size)
    t = torch.full((batch,), 500)
    y = torch.arange(batch) % c.num_classes
    best = time_side_by_side(
        partial(denoiser(teacher, y, cfg_scale), x, t),
        partial(denoiser(student, y, cfg_scale), x, t),
        rounds=rounds,
        min_run_time=min_run_time,
    )
    return {
        "batch": batch,
        "cfg_scale": cfg_scale,
        "host_ms": best["host"] * 1e3,
        "grafted_ms": best["grafted"] * 1e3,
        "speedup": best["host"] / best["grafted"],
    }


def teacher_samples_name(per_class: int, sampling: dict[str, Any]) -> str:
    """The cache file of the teacher's report samples (a function of the sampling settings)."""
    s = sampling
    return f"samples-{s['sampler']}{s['steps']}-cfg{s['cfg_scale']}-seed{s['seed']}-{per_class}.safetensors"


def cached_samples(path: Path | None, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, read from / written to ``path`` (safetensors) when given: the teacher's
    samples are the same for every graft of it."""
    if path is not None and path.is_file():
        return load_file(str(path))["images"]
    images = make()
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({"images": images.contiguous()}, str(tmp))
    return images


def evaluate(
    teacher: nn.Module, student: nn.Module, base: Path, cfg: dict[str, Any], grids: Path
) -> dict[str, Any]:
    """Everything the report says about the grafted DiT against its teacher; writes the grids
    (``GRIDS``) into ``grids``."""
    r = cfg["report"]
    clf = classifier(base / "classifier.safetensors" if r["cache_classifier"] else None)
    train, _ = digits("train")
    heldout, heldout_labels = digits("heldout")
    per_class = int(r["eval_per_class"])
    sampling = dict(
        sampler=str(r["sampler"]),
        steps=int(r["sample_steps"]),
        cfg_scale=float(r["cfg_scale"]),
        seed=int(cfg.get("seed", 0)),
    )
    labels = torch.arange(teacher.config.num_classes).repeat_interleave(per_class)
    quality, images = {}, {}
    for name, model in (("teacher", teacher), ("grafted", student)):
        cache = base / teacher_samples_name(per_class, sampling) if name == "teacher" else None
        images[name] = cached_samples(cache, lambda m=model: class_grid(m, per_class, **sampling))
        quality[name] = {
            "frechet": frechet_distance(train, images[name], clf),
            "accuracy": conditional_accuracy(images[name], labels, clf),
        }
    quality["heldout_real"] = {
        "frechet": frechet_distance(train, heldout, clf),
        "accuracy": conditional_accuracy(heldout, heldout_labels, clf),
    }
    quality["frechet_ratio"] = quality["grafted"]["frechet"] / quality["teacher"]["frechet"]
    shown = min(per_class, int(r["grid_per_class"]))
    keep = torch.cat([torch.arange(c * per_class, c * per_class + shown) for c in range(10)])
    for name in ("teacher", "grafted"):
        save_grid(images[name][keep], shown, grids / f"{name}.png")
    side_by_side(grids / "teacher.png", grids / "grafted.png", grids / "side_by_side.png")
    timesteps = [int(t) for t in r["loss_timesteps"]]
    loss_t, loss_s = denoising_loss(teacher, timesteps), denoising_loss(student, timesteps)
    return {
        "quality": quality,
        "sampling": {**sampling, "samples": len(labels)},
        "denoising_loss": [
            {"t": t, "teacher": loss_t[t], "grafted": loss_s[t], "gap": loss_s[t] - loss_t[t]}
            for t in timesteps
        ],
        "latency": step_latency(
            teacher,
            student,
            int(r["latency_batch"]),
            float(r["cfg_scale"]),
            int(r["rounds"]),
            float(r["min_run_time"]),
        ),
        "params": {"host": count_params(teacher), "grafted": count_params(student)},
        "grids": list(GRIDS),
    }


def side_by_side(left: Path, right: Path, out: Path, gap: int = 8) -> None:
    """Two PNGs next to each other on a grey background (teacher left, grafted right)."""
    a, b = Image.open(left), Image.open(right)
    canvas = Image.new("RGB", (a.width + gap + b.width, max(a.height, b.height)), (128, 128, 128))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    canvas.save(out, format="PNG")


def table(report: dict[str, Any]) -> str:
    """The DiT report as plain-text lines for the terminal."""
    q = report["quality"]
    lines = [f"graft {report['plan']} into {report['base']} (dit)", ""]
    lines.append(f"{'samples':<22} {'Fréchet':>9} {'cond. acc.':>11}")
    for name in ("heldout_real", "teacher", "grafted"):
        lines.append(f"{name:<22} {q[name]['frechet']:>9.3f} {q[name]['accuracy']:>11.3f}")
    lines.append(f"grafted / teacher Fréchet: {q['frechet_ratio']:.3f}x")
    lines.append("")
    lines.append(f"{'t':>5} {'teacher mse':>12} {'grafted mse':>12} {'gap':>9}")
    for row in report["denoising_loss"]:
        lines.append(
            f"{row['t']:>5} {row['teacher']:>12.4f} {row['grafted']:>12.4f} {row['gap']:>9.4f}"
        )
    lat = report["latency"]
    lines.append("")
    lines.append(
        f"sampling step ({lat['batch']} images, cfg {lat['cfg_scale']}): host {lat['host_ms']:.2f} ms, "
        f"grafted {lat['grafted_ms']:.2f} ms, {lat['speedup']:.2f}x"
    )
    p = report["params"]
    lines.append(f"params: host {p['host']:,}, grafted {p['grafted']:,}")
    c = report.get("compute") or {}
    if c.get("fraction") is not None:
        lines.append(f"distillation compute: {100 * c['fraction']:.2f}% of the teacher's training")
    t = report["seconds"]
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return "\n".join(lines)
