"""Training a supernet with the sandwich rule and in-place distillation (Lightning).

Every step trains, on the same batch, the space's teacher (on the task loss), its smallest
subnet and ``num_random`` random subnets (on a mix of the task loss and distillation from the
teacher's detached outputs), accumulating gradients into the shared weights before one optimiser
step (Yu et al. 2019/2020, "Universally Slimmable Networks", "BigNAS"). Subnets are drawn from a
generator seeded by (seed, step), so a resumed run draws the same subnets.

The module takes any loss and metric callables; it knows nothing about tasks (``supernet`` never
imports ``nas``). Batches are dicts with ``inputs`` and optionally ``padding_mask``/``targets``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from common.schedule import warmup_cosine
from search_spaces import Arch, OpSpec
from search_spaces.space import SearchSpace
from supernet.supernet import Supernet

LossFn = Callable[[torch.Tensor, dict], torch.Tensor]
MetricFn = Callable[[torch.Tensor, dict], tuple[float, int]]


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, batch: dict, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher ‖ student) over the last (class) axis, on scored positions only when the batch
    marks them (``targets != -100`` with the outputs' leading shape)."""
    targets = batch.get("targets")
    if targets is not None and targets.shape == student.shape[:-1]:
        keep = targets != -100
        student, teacher = student[keep], teacher[keep]
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    log_q = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2


class _OneMixer:
    """A ``SearchSpace.sample`` suggester: every ``*.mixer`` decision is ``mixer``, the others
    drawn from ``rng``."""

    def __init__(self, rng: random.Random, mixer: str) -> None:
        self.rng, self.mixer = rng, mixer

    def suggest_categorical(self, name: str, choices):
        return self.mixer if name.endswith(".mixer") else self.rng.choice(list(choices))


def mixer_teacher(space: SearchSpace, head, mixer: str) -> Arch:
    """The space's teacher with every layer's token mixer replaced by ``mixer``, each of its
    hyperparameters at the last (by the spaces' convention, the largest) choice."""
    op = next(o for o in space.mixers if o.name == mixer)
    spec = OpSpec(mixer, {k: v[-1] for k, v in op.hparams.items()})
    teacher = space.teacher(head)
    layers = tuple(dataclasses.replace(layer, mixer=spec) for layer in teacher.layers)
    return teacher.replace(layers=layers)


class SupernetModule(L.LightningModule):
    """Lightning wrapper: sandwich-rule training, validation of reference subnets."""

    def __init__(
        self,
        supernet: Supernet,
        loss_fn: LossFn,
        metric_fn: MetricFn | None = None,
        *,
        num_random: int = 2,
        distill_weight: float = 0.5,
        temperature: float = 1.0,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        max_steps: int = 1000,
        teacher_steps: int = 0,
        single_mixer_prob: float = 0.0,
        mixer_teachers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.supernet = supernet
        self.loss_fn, self.metric_fn = loss_fn, metric_fn
        self.num_random, self.distill_weight, self.temperature = (
            num_random,
            distill_weight,
            temperature,
        )
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps, self.seed = warmup_steps, max_steps, seed
        self.teacher_steps = teacher_steps
        if not 0.0 <= single_mixer_prob <= 1.0:
            raise ValueError(f"`single_mixer_prob` must be in [0, 1], got {single_mixer_prob}")
        self.single_mixer_prob = single_mixer_prob
        self.mixer_teachers = mixer_teachers
        self.automatic_optimization = False  # one backward per subnet frees its graph at once
        self._val: dict[str, list[float]] = {}

    def sandwich(self, step: int) -> list[tuple[str, Arch]]:
        """The subnets trained at ``step``: teacher first, then smallest and random ones; only the
        teacher during the first ``teacher_steps`` (as Once-for-All trains the full network
        first: subnets then distil from a teacher that already solves the task)."""
        space, head = self.supernet.space, self.supernet.head_spec
        if step < self.teacher_steps:
            return [("teacher", space.teacher(head))]
        rng = random.Random(self.seed * 1_000_003 + step)
        randoms = [(f"random{i}", self.random_subnet(rng)) for i in range(self.num_random)]
        if self.mixer_teachers:  # each token mixer's own teacher in turn, distilling too
            turn = space.mixers[step % len(space.mixers)].name
            randoms.insert(0, (f"teacher_{turn}", mixer_teacher(space, head, turn)))
        return [("teacher", space.teacher(head)), ("smallest", space.smallest(head)), *randoms]

    def random_subnet(self, rng: random.Random) -> Arch:
        """A uniformly sampled subnet or, with probability ``single_mixer_prob``, one whose every
        layer uses the same (randomly chosen) token mixer, so that each operator also trains in
        the company of its own kind, as a model built from it alone would use it."""
        space, head = self.supernet.space, self.supernet.head_spec
        if self.single_mixer_prob and rng.random() < self.single_mixer_prob:
            return space.sample(_OneMixer(rng, rng.choice(space.mixers).name), head=head)
        return space.sample(rng, head=head)

    def _forward(self, arch: Arch, batch: dict) -> torch.Tensor:
        self.supernet.activate(arch)
        return self.supernet(batch["inputs"], padding_mask=batch.get("padding_mask"))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        (_, teacher), *students = self.sandwich(self.global_step)
        teacher_out = self._forward(teacher, batch)
        teacher_loss = self.loss_fn(teacher_out, batch)
        self.manual_backward(teacher_loss)
        soft = teacher_out.detach()
        logs = {"train/teacher_loss": teacher_loss.detach()}
        w = self.distill_weight
        for name, arch in students:
            out = self._forward(arch, batch)
            task_loss = self.loss_fn(out, batch)
            loss = (1 - w) * task_loss + w * distillation_loss(out, soft, batch, self.temperature)
            self.manual_backward(loss)
            if name == "smallest":
                logs["train/smallest_loss"] = task_loss.detach()
            elif name.startswith("teacher_"):  # a mixer teacher: shows whether its mixer learns
                logs[f"train/{name}_loss"] = task_loss.detach()
        self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()
        self.log_dict(logs, prog_bar=True, on_step=True, batch_size=len(batch["inputs"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        head = self.supernet.head_spec
        for name, arch in (
            ("teacher", self.supernet.space.teacher(head)),
            ("smallest", self.supernet.space.smallest(head)),
        ):
            out = self._forward(arch, batch)
            self.log(
                f"val/{name}_loss",
                self.loss_fn(out, batch),
                batch_size=len(batch["inputs"]),
                sync_dist=True,
            )
            if self.metric_fn is not None:
                total, count = self.metric_fn(out, batch)
                acc = self._val.setdefault(name, [0.0, 0])
                acc[0], acc[1] = acc[0] + float(total), acc[1] + int(count)

    def on_validation_epoch_end(self) -> None:
        for name, (total, count) in self._val.items():
            self.log(
                f"val/{name}_metric",
                total / max(count, 1),
                prog_bar=name == "teacher",
                sync_dist=True,
            )
        self._val = {}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.supernet.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )

        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, self.warmup_steps, self.max_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
