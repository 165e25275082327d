"""Tasks: the data, loss and metric a search optimises (see ``nas.tasks.base.Task``).

Public API::

    list_tasks()                  registered task names
    get_task(name_or_config)      a task by name (default settings), or from a config mapping
    get_task_class(name)          the ``Task`` subclass registered as ``name``
    register_task(name)           decorator for your own ``Task`` subclasses
    Task                          the abstract base; its docstring is the contract

Every module of this package is imported here, so a new file with a ``@register_task`` class
registers itself; a task of your own elsewhere registers when its module is imported.

A config is a mapping (or an OmegaConf ``DictConfig``, e.g. ``conf/task/mqar.yaml``) with
``name`` plus parameters; ``target: my_package.my_module.MyTask`` loads a user's own ``Task``
subclass instead of a registered one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from common.registry import import_submodules
from nas.tasks.base import IGNORE_INDEX, TASKS, Task, register_task
from nas.tasks.charlm import CharLM
from nas.tasks.digits import Digits
from nas.tasks.listops import ListOps
from nas.tasks.mqar import MQAR

import_submodules(__name__, __path__)  # every module registers its tasks


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return TASKS.names()


def get_task_class(name: str | type[Task]) -> type[Task]:
    """The ``Task`` subclass registered as ``name`` (a class is returned as it is); raises
    ``ValueError`` listing the valid names."""
    if isinstance(name, type) and issubclass(name, Task):
        return name
    return TASKS.lookup(name)


def _drop(record: logging.LogRecord) -> bool:
    """A logging filter that drops every record."""
    return False


def _import_class(target: str) -> type[Task]:
    """``package.module.Class`` (or ``package.module:Class``) -> the ``Task`` subclass."""
    path = target.replace(":", ".")
    if "." not in path.strip("."):
        raise ValueError(f"task `target` must be a dotted path `module.Class`, got {target!r}")
    hydra_log = logging.getLogger("hydra.utils")  # get_class logs its error too: one line is ours
    hydra_log.addFilter(_drop)
    try:
        cls = get_class(path)
    except (ImportError, ValueError) as e:  # what hydra's lookup raises, over several lines
        reason = " ".join(str(e).split()).removeprefix(f"Error loading '{path}': ")
        raise ValueError(f"cannot load task `target` {target!r}: {reason}") from None
    finally:
        hydra_log.removeFilter(_drop)
    if not issubclass(cls, Task):
        raise ValueError(f"task `target` {target!r} is not a subclass of nas.tasks.Task")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise ValueError(
            f"task `target` {target!r} has no `name` (a class attribute naming runs and reports)"
        )
    return cls


def get_task(name_or_config: str | Mapping[str, Any] | DictConfig | Task) -> Task:
    """A task from its registered name (default settings), a config mapping with ``name`` (and
    optionally ``target``) plus parameters, or a ``Task`` (returned as it is)."""
    if isinstance(name_or_config, Task):
        return name_or_config
    if isinstance(name_or_config, str):
        return get_task_class(name_or_config)()
    config = name_or_config
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise ValueError(f"expected a task name or config mapping, got {name_or_config!r}")
    if config.get("target") is not None:
        cls = _import_class(str(config["target"]))
    elif "name" in config:
        cls = get_task_class(config["name"])
    else:
        raise ValueError(f"a task config needs `name` (one of {list_tasks()}) or `target`")
    return cls.from_config(config)


__all__ = [
    "IGNORE_INDEX",
    "MQAR",
    "CharLM",
    "Digits",
    "ListOps",
    "Task",
    "get_task",
    "get_task_class",
    "list_tasks",
    "register_task",
]
