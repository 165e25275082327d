"""Supernet training: the sandwich rule learns, and a killed run resumes exactly."""

from __future__ import annotations

import random

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from search_spaces import HeadSpec
from search_spaces.space import SearchSpace
from supernet.data import StepSampler, resumable_loader
from supernet.supernet import Supernet
from supernet.training import SupernetModule, distillation_loss

TINY = {
    "name": "tiny",
    "head_dim": 8,
    "dim": [16, 32],
    "depth": [1, 2],
    "norm": ["layernorm"],
    "mixer": {"softmax": {"heads": [2, 4]}, "linear": {"heads": [2]}},
    "channel": {"mlp": {"ratio": [2]}},
    "references": {
        "baseline": {
            "dim": 32,
            "depth": 2,
            "mixer": {"name": "softmax", "heads": 4},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "teacher": {
            "dim": 32,
            "depth": 2,
            "mixer": {"name": "softmax", "heads": 4},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "smallest": {
            "dim": 16,
            "depth": 1,
            "mixer": {"name": "linear", "heads": 2},
            "channel": {"name": "mlp", "ratio": 2},
        },
    },
}
HEAD = HeadSpec(kind="lm", vocab_size=12, max_len=16)


def copy_task_loader(n: int = 64, seed: int = 0) -> DataLoader:
    """Predict the previous token (needs token mixing): a task every subnet can learn a bit."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 12, (n, 16), generator=g)
    y = torch.roll(x, 1, dims=1)
    y[:, 0] = -100

    def collate(rows):
        xs, ys = zip(*rows, strict=True)
        return {"inputs": torch.stack(xs), "targets": torch.stack(ys)}

    return DataLoader(TensorDataset(x, y), batch_size=16, collate_fn=collate)


def loss_fn(out: torch.Tensor, batch: dict) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out.flatten(0, 1), batch["targets"].flatten())


def make_module(seed: int = 0, max_steps: int = 8) -> SupernetModule:
    torch.manual_seed(seed)
    net = Supernet(SearchSpace(TINY, source="tiny"), head=HEAD)
    return SupernetModule(net, loss_fn, num_random=1, lr=1e-2, max_steps=max_steps, seed=seed)


def fit(module: SupernetModule, steps: int, ckpt_dir, resume: bool = False) -> None:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        deterministic=True,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=3, save_top_k=0)
        ],
    )
    loader = resumable_loader(copy_task_loader(), steps, lambda: module.global_step, seed=0)
    trainer.fit(module, loader, ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None)


def test_teacher_alone_first_then_the_sandwich() -> None:
    module = make_module()
    module.teacher_steps = 3
    teacher = module.supernet.space.teacher(module.supernet.head_spec)
    assert module.sandwich(2) == [("teacher", teacher)]
    assert [name for name, _ in module.sandwich(3)] == ["teacher", "smallest", "random0"]


def test_sandwich_is_reproducible_per_step() -> None:
    module = make_module()
    names = [name for name, _ in module.sandwich(5)]
    assert names == ["teacher", "smallest", "random0"]
    assert module.sandwich(5) == module.sandwich(5)
    assert any(module.sandwich(s)[2][1] != module.sandwich(5)[2][1] for s in range(6, 12))


def test_single_mixer_subnets() -> None:
    module = make_module()
    module.single_mixer_prob = 1.0  # every random subnet: one token mixer in all its layers
    randoms = [module.sandwich(s)[2][1] for s in range(40)]
    assert all(len({layer.mixer.name for layer in a.layers}) == 1 for a in randoms)
    assert len({a.layers[0].mixer.name for a in randoms}) == len(module.supernet.space.mixers)
    assert all(module.supernet.space.contains(a) for a in randoms)
    with pytest.raises(ValueError, match="single_mixer_prob"):
        SupernetModule(module.supernet, loss_fn, single_mixer_prob=1.5)


def test_mixer_teachers_take_turns() -> None:
    """With ``mixer_teachers`` each token mixer's own teacher joins the sandwich in turn after
    the teacher phase: the teacher with only its mixer changed, inside the space."""
    module = make_module()
    module.teacher_steps, module.mixer_teachers = 2, True
    space, head = module.supernet.space, module.supernet.head_spec
    teacher = space.teacher(head)
    assert module.sandwich(1) == [("teacher", teacher)]
    seen = set()
    for step in range(2, 2 + len(space.mixers)):
        names = [name for name, _ in module.sandwich(step)]
        assert names[:2] == ["teacher", "smallest"] and names[3:] == ["random0"]
        arch = module.sandwich(step)[2][1]
        assert names[2] == f"teacher_{arch.layers[0].mixer.name}" and space.contains(arch)
        assert [layer.channel for layer in arch.layers] == [
            layer.channel for layer in teacher.layers
        ]
        assert arch.dim == teacher.dim and len({layer.mixer for layer in arch.layers}) == 1
        seen.add(arch.layers[0].mixer.name)
    assert seen == {op.name for op in space.mixers}


def test_each_mixer_teacher_logs_its_task_loss() -> None:
    """``train/teacher_<mixer>_loss`` shows whether each operator learns the task on its own."""
    module = make_module(max_steps=4)
    module.teacher_steps, module.mixer_teachers = 1, True
    trainer = L.Trainer(
        max_steps=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        enable_checkpointing=False,
    )
    trainer.fit(module, resumable_loader(copy_task_loader(), 4, lambda: module.global_step, seed=0))
    logged = {k for k in trainer.callback_metrics if k.startswith("train/teacher_")}
    assert logged == {
        "train/teacher_loss",
        "train/teacher_softmax_loss",
        "train/teacher_linear_loss",
    }


def test_training_improves_every_subnet(tmp_path) -> None:
    module = make_module(max_steps=25)
    net, loader = module.supernet, copy_task_loader(seed=1)
    subnets = [net.space.teacher(HEAD), net.space.smallest(HEAD)] + [
        net.space.sample(random.Random(s), head=HEAD) for s in range(3)
    ]

    def losses() -> list[float]:
        out = []
        with torch.no_grad():
            for arch in subnets:
                net.activate(arch)
                out.append(sum(loss_fn(net(b["inputs"]), b).item() for b in loader))
        return out

    before = losses()
    fit(module, 25, tmp_path)
    after = losses()
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)


def test_resume_after_kill_is_exact(tmp_path) -> None:
    straight = make_module()
    fit(straight, 8, tmp_path / "a")
    killed = make_module()
    fit(killed, 7, tmp_path / "b")  # "killed" at step 7; its last checkpoint is from step 6
    resumed = make_module()
    fit(resumed, 8, tmp_path / "b", resume=True)
    for key, value in straight.supernet.weights.items():
        torch.testing.assert_close(resumed.supernet.weights[key], value, rtol=0, atol=0)


def test_step_sampler_starts_at_the_current_step() -> None:
    step = 0
    s = StepSampler(size=10, batch_size=3, total_steps=8, current_step=lambda: step, seed=3)
    everything = list(s)
    assert len(everything) == 24 and sorted(everything[:10]) == list(range(10))  # one pass
    step = 5
    assert list(s) == everything[15:]  # resuming at step 5 continues the same stream


def test_distillation_only_on_scored_positions() -> None:
    teacher = torch.randn(2, 5, 7)
    student = teacher.clone()
    student[:, 0, 0] += 5.0  # differs only where nothing is scored
    batch = {"targets": torch.tensor([[-100, 1, 2, 3, 4]] * 2)}
    assert distillation_loss(student, teacher, batch).abs() < 1e-6
    assert distillation_loss(student, teacher, {}) > 0.01
