"""``Task``: the data, loss and metric an architecture is searched for.

A task is pure data and scoring; it knows nothing of the search or the supernet, so the same
object serves the search, the final training of a chosen architecture and its report.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from common.registry import Registry
from search_spaces import HeadSpec

IGNORE_INDEX = -100  # targets at unscored positions (``F.cross_entropy``'s default ignore_index)
DIRECTIONS = ("maximize", "minimize")

TASKS: Registry[type[Task]] = Registry("task")  # filled by @register_task; see nas.tasks


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a ``Task`` subclass available to ``get_task`` as ``name``."""

    def decorator(cls: type[Task]) -> type[Task]:
        TASKS.add(name, cls)
        cls.name = name
        return cls

    return decorator


class Task(abc.ABC):
    """Base class of every task.

    Contract, in the order the platform uses it:

    1. Construction. ``cls(**params)`` with keyword parameters only, every one with a default,
       so ``cls()`` is the task's default setting (which must equal its ``conf/task/*.yaml``).
       A subclass stores each constructor parameter under an attribute of the same name;
       ``to_config`` reads them back, and ``from_config`` is its inverse. Invalid parameters
       raise ``ValueError`` naming the field and the value.
    2. ``head()``: the ``HeadSpec`` the model needs. The search writes it into every ``Arch`` it
       samples, so it must cover both the training length and ``latency_shape``.
    3. ``datamodule(batch_size)``: a ``LightningDataModule`` whose train/val/test dataloaders
       yield dict batches ``{"inputs": (B, L) long, "targets": (B, L) long,
       ["padding_mask": (B, L) bool, True at real tokens]}``; ``targets`` holds ``IGNORE_INDEX``
       (-100) wherever nothing is scored. Data is a deterministic function of the task's
       parameters (seed included); the three splits are fixed and drawn from different seeds.
       A datamodule is cheap to create; data may be generated lazily on first use.
    4. ``run_model(model, batch)`` calls a model the way every consumer must:
       ``model(inputs, padding_mask=...)``. ``loss(outputs, batch)`` is the scalar training
       loss; ``metric_counts(outputs, batch)`` returns ``(numerator, count)`` summed over the
       batch so that ``sum(numerators) / sum(counts)`` is the exact metric over many batches.
       Neither mutates ``outputs`` or ``batch``.
    5. ``evaluate(model, dataloader)``: the metric of a model over a dataloader, computed in
       eval and inference mode; the model's train/eval mode is restored afterwards.
       ``direction`` says whether the search maximises or minimises it.
    6. ``latency_shape`` and ``example_input(shape)``: a deployment-like input for latency
       measurement (e.g. ``(1, 2048)`` token ids), valid for any model built with ``head()``.

    Subclasses set the class attributes ``metric_name`` and ``direction`` (and ``name``, which
    ``@register_task(name)`` sets; a user's unregistered class is loaded by ``target``) and
    implement ``head``, ``datamodule`` and ``metric_counts``; ``loss`` defaults to
    cross-entropy on the positions whose target is not ``IGNORE_INDEX``.
    """

    name: ClassVar[str]
    metric_name: ClassVar[str]
    direction: ClassVar[str]
    latency_shape: tuple[int, ...] = (1, 2048)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        direction = getattr(cls, "direction", None)
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"`direction` must be one of {DIRECTIONS}, but got {direction=}")

    # -- configuration --------------------------------------------------------------------------
    @classmethod
    def params(cls) -> list[str]:
        """Names of the constructor parameters (the keys a config may set besides ``name``)."""
        sig = inspect.signature(cls.__init__).parameters
        return [k for k, p in sig.items() if k != "self" and p.kind is p.KEYWORD_ONLY]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Task:
        """The task a config mapping describes; ``name`` (and ``target``) keys are ignored."""
        params = {k: v for k, v in config.items() if k not in ("name", "target")}
        unknown = sorted(set(params) - set(cls.params()))
        if unknown:
            valid = ", ".join(cls.params())
            raise ValueError(f"task {cls.__name__} has no parameter {unknown[0]!r}; valid: {valid}")
        return cls(**params)

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., **params}``: ``from_config`` of it rebuilds an equal task."""
        cls = type(self)
        config: dict[str, Any] = {"name": getattr(cls, "name", cls.__name__)}
        if TASKS.get(config["name"]) is not cls:  # not registered: load it by its dotted path
            config["target"] = f"{cls.__module__}.{cls.__qualname__}"
        for k in self.params():
            value = getattr(self, k)
            config[k] = list(value) if isinstance(value, tuple) else value
        return config

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.params())
        return f"{type(self).__name__}({params})"

    # -- what subclasses provide ----------------------------------------------------------------
    @abc.abstractmethod
    def head(self) -> HeadSpec:
        """The model head this task needs."""

    @abc.abstractmethod
    def datamodule(self, batch_size: int | None = None) -> L.LightningDataModule:
        """Train/val/test dataloaders of dict batches (see the class docstring)."""

    @abc.abstractmethod
    def metric_counts(
        self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[float, int]:
        """``(numerator, count)`` of the metric over one batch."""

    # -- shared behaviour -------------------------------------------------------------------------
    def run_model(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model's outputs on a batch: ``model(inputs, padding_mask=...)``."""
        return model(batch["inputs"], padding_mask=batch.get("padding_mask"))

    def loss(self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over scored positions; outputs (B, L, V) or (B, C)."""
        return F.cross_entropy(
            outputs.flatten(0, -2).float(),
            batch["targets"].flatten(),
            ignore_index=IGNORE_INDEX,
        )

    def evaluate(
        self,
        model: nn.Module,
        dataloader: Iterable[Mapping[str, torch.Tensor]],
        max_batches: int | None = None,
    ) -> float:
        """The metric of ``model`` over (the first ``max_batches`` batches of) ``dataloader``."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        total, count = 0.0, 0
        model.eval()
        try:
            with torch.inference_mode():
                for i, batch in enumerate(dataloader):
                    if max_batches is not None and i >= max_batches:
                        break
                    batch = {k: v.to(device) for k, v in batch.items()}
                    num, n = self.metric_counts(self.run_model(model, batch), batch)
                    total, count = total + num, count + n
        finally:
            model.train(was_training)
        if count == 0:
            raise ValueError(
                f"task {self.name!r}: no scored positions to evaluate ({max_batches=})"
            )
        return total / count

    def example_input(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """A valid random input of ``shape`` (default ``latency_shape``): token ids below the
        head's vocabulary, or standard-normal images for image heads."""
        shape = tuple(self.latency_shape if shape is None else shape)
        vocab = self.head().vocab_size
        return torch.randint(0, vocab, shape) if vocab > 0 else torch.randn(shape)
