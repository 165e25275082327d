"""Grafting a DiT: ``python -m grafting.graft base=<DiT folder> plan=dit_gated_conv_50`` lands here
(``grafting.pipeline.run`` hands DiT hosts over). The recipe of "Exploring Diffusion Transformer
Designs via Grafting" (Chandrasegaran et al., 2025), on the LLM grafting machinery:

1. surgery with the plan (``grafting.surgery``, the DiT family in ``grafting.families.dit``);
2. stage 1: every new operator regresses the replaced module's output on activations captured
   from the teacher at uniformly random timesteps **on noised images** x_t, with the true t and
   the true class (the paper's Eq. 2); L1 for attention, L2 for MLPs (``stage1.loss``);
3. stage 2: the diffusion loss on the training images with an EMA of the weights
   (``grafting.dit.train.DiffusionModule``, the teacher's own training step), and the EMA kept;
4. report (``grafting.dit.report``) and save (``grafting.io.save``: ``grafting.load`` rebuilds it).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from common.fit import fit
from common.quiet import quiet_lightning
from grafting import stage1
from grafting.dit.data import digits
from grafting.dit.diffusion import GaussianDiffusion
from grafting.dit.io import load_dit
from grafting.dit.parallel import capture_pairs, halve_depth, train_pairs
from grafting.dit.report import evaluate
from grafting.dit.train import DiffusionModule
from grafting.families import get_family
from grafting.io import save
from grafting.pipeline import check_settings, read_plan
from grafting.surgery import graft
from search_spaces.checks import check_int, user_input

TRAIN_MODES = ("grafted", "all")  # stage 2 of a DiT (no LoRA)


def is_dit(base: Any) -> bool:
    """Whether ``base`` is a DiT model folder (``config.json`` with ``model_type: dit``)."""
    config = Path(str(base)).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "dit"
    except (json.JSONDecodeError, AttributeError):
        return False


def calibration(
    diffusion: GaussianDiffusion, images: int, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """Teacher inputs for stage 1: ``images`` training images (a seeded draw, cycled if more are
    asked for than exist), each noised to x_t at a uniformly random timestep t, with its true
    class y, in batches ``{"x": x_t, "t": t, "y": y}`` (the keywords of ``DiT.forward``)."""
    x0, y = digits("train")
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(x0), generator=g).repeat(images // len(x0) + 1)[:images]
    t = torch.randint(0, diffusion.num_timesteps, (images,), generator=g)
    noise = torch.randn(images, *x0.shape[1:], generator=g)
    x_t = diffusion.q_sample(x0[index], t, noise)
    return [
        {
            "x": x_t[i : i + batch_size],
            "t": t[i : i + batch_size],
            "y": y[index][i : i + batch_size],
        }
        for i in range(0, images, batch_size)
    ]


def finetune(
    student: torch.nn.Module, wrappers: list[torch.nn.Module], cfg: dict[str, Any], progress: bool
) -> dict[str, Any]:
    """Stage 2: the diffusion loss on the training images for ``stage2.steps`` steps, training
    the grafted operators (``stage2.train: grafted``) or everything (``all``); the student ends
    as the EMA of its weights."""
    s2, d = cfg["stage2"], cfg["data"]
    steps, batch_size = int(s2["steps"]), int(d["batch_size"])
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0}
    mode = str(s2.get("train", "grafted"))
    if mode not in TRAIN_MODES:
        raise ValueError(f"stage2.train must be grafted or all for a DiT, but got {mode!r}")
    start = time.perf_counter()
    student.requires_grad_(mode == "all")
    for w in wrappers:
        w.requires_grad_(True)
    student.pos_embed.requires_grad_(False)  # fixed sin-cos positions, as in the teacher
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    module = DiffusionModule(
        student.train(),
        {
            "lr": float(s2["lr"]),
            "weight_decay": 0.0,
            "steps": steps,
            "warmup": 0.05,
            "lr_floor": 0.1,
            "ema_decay": float(s2["ema_decay"]),
            "early_step": -1,
        },
    )
    x, y = digits("train")
    dataset = TensorDataset(x, y)
    g = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    sampler = RandomSampler(dataset, num_samples=steps * batch_size, generator=g)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
    with quiet_lightning(), tempfile.TemporaryDirectory(prefix="dit-stage2-") as logs:
        trainer = L.Trainer(
            max_steps=steps,
            accelerator=str(s2.get("accelerator", "cpu")),
            devices=1,
            logger=False,
            default_root_dir=logs,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            callbacks=[TQDMProgressBar(refresh_rate=10)] if progress else [],
            enable_model_summary=False,
            deterministic=True,
        )
        fit(trainer, module, loader)
    student.load_state_dict(module.ema.state_dict())
    student.requires_grad_(False).eval()
    tail = module.losses[-max(1, steps // 10) :]
    return {
        "steps": steps,
        "train": mode,
        "trainable_params": trainable,
        "batch_size": batch_size,
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - start,
    }


def run_dit(cfg: dict[str, Any]) -> dict[str, Any]:
    """Graft a DiT per ``cfg`` (``conf/graft_dit.yaml``); returns
    the report (also in ``out/report.json``), with the sample grids written to ``out``."""
    times: dict[str, float] = {}
    seed = int(cfg.get("seed", 0))
    check_settings(cfg, train_modes=TRAIN_MODES)
    d = cfg["data"]
    check_int("data.calib_images", d["calib_images"])
    check_int("data.batch_size", d["batch_size"])
    torch.manual_seed(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    out = Path(cfg.get("out") or f"runs/graft-{Path(str(cfg['plan'])).stem}")
    if out.exists() and any(out.iterdir()) and not cfg.get("overwrite"):
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    progress = bool(cfg.get("progress", True))

    start = time.perf_counter()
    plan = read_plan(cfg["plan"])
    base = Path(str(cfg["base"])).expanduser()
    with user_input(f"base={cfg['base']}"):
        teacher = load_dit(base).eval().requires_grad_(False)
        family = get_family(teacher.config)
    student = copy.deepcopy(teacher)
    pairs = halve_depth(student) if plan.restructure else []
    with user_input(f"plan={cfg['plan']}"):
        wrappers = graft(student, family, plan)  # validates the whole plan before changing
    diffusion = GaussianDiffusion(learn_sigma=teacher.config.learn_sigma)
    calib = calibration(diffusion, int(d["calib_images"]), int(d["batch_size"]), seed)
    times["load"] = time.perf_counter() - start

    s1 = dict(cfg["stage1"])
    if pairs:
        start = time.perf_counter()
        data = capture_pairs(teacher, calib)
        result1 = train_pairs(
            pairs, data, steps=int(s1["steps"]), lr=float(s1["lr"]), progress=progress, seed=seed
        )
        times["stage1"] = time.perf_counter() - start
    else:
        result1, times["stage1"] = stage1.run(teacher, family, wrappers, calib, s1, progress, seed)

    start = time.perf_counter()
    trained = pairs or list(wrappers.values())
    result2 = finetune(student, trained, cfg, progress)
    times["stage2"] = time.perf_counter() - start

    start = time.perf_counter()
    if progress:
        print(
            "report: samples of teacher and grafted model, Fréchet distance, denoising loss, "
            "latency per sampling step",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="graft-grids-") as grids:
        report = evaluate(teacher, student, base, cfg, Path(grids))
        times["report"] = time.perf_counter() - start
        report.update(
            base=str(cfg["base"]),
            plan=plan.name,
            family=family.name,
            grafted=[f"{2 * i}+{2 * i + 1}:parallel_pair" for i in range(len(pairs))]
            + [
                f"{i}.{slot}:{spec.op}"
                for (i, slot), spec in plan.resolve(family.num_layers(teacher)).items()
            ],
            stage1=result1,
            stage2=result2,
            seconds=times,
        )
        slots = 4 * len(pairs) or len(wrappers)  # a pair is two blocks: four slots
        report["compute"] = compute_fraction(teacher, base, d, result1, result2, slots)
        save(
            out,
            student,
            plan,
            run_config=cfg,
            report=report,
            overwrite=bool(cfg.get("overwrite")),
            extra_files=sorted(Path(grids).glob("*.png")),
        )
    report["out"] = str(out)
    return report


def compute_fraction(
    teacher: torch.nn.Module,
    base: Path,
    d: dict[str, Any],
    result1: dict[str, Any],
    result2: dict[str, Any],
    grafted_slots: int,
) -> dict[str, Any]:
    """Distillation compute as a fraction of the teacher's training (``base/train.json``), in
    teacher-forward FLOPs: the stage-1 capture is one forward per calibration image; a stage-1
    step costs forward + backward (3x) of the grafted slots' share of the blocks (each slot
    counted as half a block: an upper bound for the cheaper operators); a stage-2 step 3x a
    forward per image."""
    from grafting.dit.model import forward_flops

    info = base / "train.json"
    if not info.is_file():
        return {"fraction": None, "why": f"no train.json in {base}"}
    trained = json.loads(info.read_text())
    per_image, batch = forward_flops(teacher.config), int(d["batch_size"])
    share = grafted_slots / (2 * teacher.config.depth)
    images = (
        int(d["calib_images"])
        + 3 * share * result1.get("steps", 0) * batch
        + 3 * result2.get("steps", 0) * batch
    )
    return {
        "distill_flops": per_image * images,
        "teacher_train_flops": trained["train_flops"],
        "fraction": per_image * images / trained["train_flops"],
        "teacher_wall_seconds": trained.get("wall_seconds"),
    }
