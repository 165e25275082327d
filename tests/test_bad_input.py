"""The bad-input contract of every command, as one table: a user's mistake (a bad value, an
unknown name, a missing, truncated or foreign file) ends the command with exit status 2 and
exactly one line on stderr, ``error: ...``, naming the offending field or file, with no
traceback; and the folder it ran in is left exactly as it was (nothing written, no run folder,
no temporary file). A bug is not bad input: it keeps its traceback.

Every case runs the command in-process (``module.main(argv)``) in its own empty folder, after
``prepare`` has put the case's inputs there; validation happens before any training, so each
case takes a fraction of a second."""

from __future__ import annotations

import importlib
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from search_spaces.cli import INTERNAL_ERROR, UsageError, run_cli
from search_spaces.space import SpaceError, load_space
from tests.nas.search_run import make_run

Prepare = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """``command``'s ``main(argv)`` must fail as bad input, its one line containing ``names``."""

    command: str
    argv: tuple[str, ...]
    names: str
    prepare: tuple[Prepare, ...] = ()
    search_run: bool = False  # copy the tiny search run of tests/nas/search_run.py into run/
    xfail: str | None = None


# -- inputs a case prepares -------------------------------------------------------------------
def write(name: str, content: str | bytes) -> Prepare:
    def prepare(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return prepare


def truncate(name: str) -> Prepare:
    """Keep the first half of an existing file (as a killed copy or a full disk leaves it)."""

    def prepare(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])

    return prepare


def remove(name: str) -> Prepare:
    def prepare(root: Path) -> None:
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return prepare


def edit_json(name: str, **changes: object) -> Prepare:
    def prepare(root: Path) -> None:
        data = json.loads((root / name).read_text())
        (root / name).write_text(json.dumps({**data, **changes}))

    return prepare


def space_file(**changes: object) -> Prepare:
    """``space.yaml``: the ``efficient_attn`` space with ``changes``."""
    data = yaml.safe_load(Path(load_space("efficient_attn").source).read_text())
    return write("space.yaml", yaml.safe_dump({**data, **changes}))


RANDOM_BYTES = bytes(range(256)) * 8
PICKLE = pickle.dumps({"weights": [0.5] * 64})
USER_TASK = write(  # a user's task class that forgot its `name`
    "user_task.py",
    "from nas.tasks import MQAR\n\nclass NoName(MQAR):\n    pass\n\nNoName.name = None\n",
)
HOST = write(  # a Hugging Face folder: a tiny BERT config; weights are added per case
    "host/config.json",
    json.dumps(
        {
            "model_type": "bert",
            "vocab_size": 64,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        }
    ),
)
GRAFTED = (  # what grafting.graft writes, with damaged weights
    write("graft/grafted.safetensors", RANDOM_BYTES),
    write("graft/plan.yaml", "name: linear_50\ngrafts: [{layers: odd, mixer: {name: linear}}]\n"),
    HOST,
)

# -- the commands' arguments: tiny budgets, so a check that went missing fails fast -----------
SEARCH = (
    "+space=efficient_attn",
    "task=mqar",
    "task.num_train=32",
    "task.num_val=16",
    "task.num_test=16",
    "train.max_steps=2",
    "train.val_every=1",
    "train.batch_size=8",
    "train.limit_val_batches=1",
    "report.val_batches=1",
    "report.random_subnets=0",
    "report.plots=false",
    "search.n_trials=1",
    "search.val_batches=1",
    "latency.shape=[1,32]",
    "latency.repeats=1",
    "latency.min_run_time=0.01",
    "run_dir=run",
    "latency.cache_dir=lat",
)
TRAIN = (*SEARCH[:11], "out=sn")
EXPORT = (
    "run=run",
    "out=export",
    "latency.min_run_time=0.01",
    "latency.min_runs=1",
    "progress=false",
)
LATENCY = ("arch_file=transformer", "measure.min_run_time=0.01", "measure.min_runs=1")
GRAFT = ("out=graft", "progress=false", "stage1.steps=1", "stage2.steps=1", "report.rounds=1")
GRAFT_EXPORT = ("run=graft", "out=export")
PLAN_SEARCH = ("out=search", "progress=false", "search.trials=2", "stage1.steps=1")

CASES = {
    # python -m nas.search
    "search/no-space": Case("nas.search", SEARCH[1:], "choose a search space with +space=NAME"),
    "search/unknown-space": Case(
        "nas.search", (*SEARCH[1:], "+space=nope"), "unknown search space; available:"
    ),
    "search/space-file-missing": Case(
        "nas.search", (*SEARCH[1:], "+space=missing.yaml"), "+space=missing.yaml: no such file"
    ),
    "search/space-dim-word-in-list": Case(
        "nas.search",
        (*SEARCH[1:], "+space=space.yaml"),
        "space.yaml: field `dim`",
        (space_file(dim=[32, 48, "wide"]),),
    ),
    "search/space-dim-word": Case(
        "nas.search",
        (*SEARCH[1:], "+space=space.yaml"),
        "space.yaml: field `dim`",
        (space_file(dim="sixty-four"),),
    ),
    "search/space-not-yaml": Case(
        "nas.search",
        (*SEARCH[1:], "+space=space.yaml"),
        "space.yaml: field `<file>`: expected valid YAML",
        (write("space.yaml", "name: [x\ndim: {"),),
    ),
    "search/space-unknown-operator": Case(
        "nas.search",
        (*SEARCH[1:], "+space=space.yaml"),
        "space.yaml: field `mixer.nope`",
        (space_file(mixer={"nope": {}}),),
    ),
    "search/unknown-task": Case(
        "nas.search",
        (*SEARCH, "task=nope"),
        "Could not find 'task/nope'; available: charlm, digits, listops, mqar",
    ),
    "search/task-parameter": Case(
        "nas.search", (*SEARCH, "task.num_pairs=-1"), "task: MQAR.num_pairs"
    ),
    "search/task-class-without-name": Case(
        "nas.search",
        (*SEARCH, "+task.target=user_task.NoName"),
        "'user_task.NoName' has no `name`",
        (USER_TASK,),
    ),
    "search/task-class-missing": Case(
        "nas.search",
        (*SEARCH, "+task.target=user_task.Nope"),
        "cannot load task `target` 'user_task.Nope'",
        (USER_TASK,),
    ),
    "search/sampler": Case(
        "nas.search", (*SEARCH, "search.sampler=bogus"), "search.sampler must be one of"
    ),
    "search/sampler-file-does-not-build": Case(
        "nas.search",
        (*SEARCH, "search.sampler=mine.yaml"),
        "search.sampler=mine.yaml: mine.yaml does not build",
        (write("mine.yaml", "_target_: optuna.samplers.TPESampler\nbogus: 1\n"),),
    ),
    "search/n-trials-zero": Case(
        "nas.search", (*SEARCH, "search.n_trials=0"), "search.n_trials must be a positive integer"
    ),
    "search/latency-threads-zero": Case(
        "nas.search", (*SEARCH, "latency.threads=0"), "latency.threads must be a positive integer"
    ),
    "search/latency-shape": Case(
        "nas.search", (*SEARCH, "latency.shape=[0,16]"), "latency.shape must be [batch, length]"
    ),
    "search/unknown-key": Case("nas.search", (*SEARCH, "search.bogus=1"), "search.bogus"),
    "search/run-json-truncated": Case(
        "nas.search",
        SEARCH,
        "run/run.json is not valid JSON",
        (write("run/run.json", '{"identity": {"spa'),),
    ),
    "search/storage-not-a-database": Case(
        "nas.search",
        (*SEARCH, "search.storage=sqlite:///study.db"),
        "study.db is not a usable SQLite database",
        (write("study.db", b"\x13\x37" * 512),),
    ),
    "search/storage-unknown-scheme": Case(
        "nas.search",
        (*SEARCH, "search.storage=foo://bar"),
        "search.storage 'foo://bar' is not a usable storage URL",
    ),
    "search/storage-journal-folder": Case(
        "nas.search",
        (*SEARCH, "search.storage=journal:///nowhere/at/all/s.log"),
        "the folder /nowhere/at/all does not exist",
    ),
    "search/heartbeat-zero": Case(
        "nas.search",
        (*SEARCH, "search.heartbeat_interval=0"),
        "search.heartbeat_interval must be a positive integer",
    ),
    "search/callback-missing": Case(
        "nas.search",
        (*SEARCH, "search.callbacks=[user_task.nope]"),
        "search.callbacks: cannot load 'user_task.nope'",
        (USER_TASK,),
    ),
    "search/plugin-missing": Case(
        "nas.search", (*SEARCH, "plugins=[no_such_plugin]"), "plugin 'no_such_plugin'"
    ),
    "search/max-steps-zero": Case(
        "nas.search", (*SEARCH, "train.max_steps=0"), "train.max_steps must be a positive integer"
    ),
    "search/batch-size-zero": Case(
        "nas.search", (*SEARCH, "train.batch_size=0"), "train.batch_size must be a positive integer"
    ),
    "search/supernet-path-truncated": Case(
        "nas.search",
        (*SEARCH, "supernet_path=run/supernet", "run_dir=search"),
        "run/supernet/supernet.safetensors: not a readable safetensors file",
        (truncate("run/supernet/supernet.safetensors"),),
        search_run=True,
    ),
    # python -m nas.train_supernet
    "train/max-steps-negative": Case(
        "nas.train_supernet",
        (*TRAIN, "train.max_steps=-5"),
        "train.max_steps must be a positive integer, got -5",
    ),
    "train/max-steps-zero": Case(
        "nas.train_supernet",
        (*TRAIN, "train.max_steps=0"),
        "train.max_steps must be a positive integer, got 0",
    ),
    "train/batch-size-zero": Case(
        "nas.train_supernet",
        (*TRAIN, "train.batch_size=0"),
        "train.batch_size must be a positive integer",
    ),
    "train/val-every-zero": Case(
        "nas.train_supernet",
        (*TRAIN, "train.val_every=0"),
        "train.val_every must be a positive integer",
    ),
    "train/lr-word": Case(
        "nas.train_supernet", (*TRAIN, "train.lr=fast"), "train.lr must be a number > 0, got 'fast'"
    ),
    "train/single-mixer-prob": Case(
        "nas.train_supernet",
        (*TRAIN, "train.single_mixer_prob=2"),
        "train.single_mixer_prob must be a number >= 0 and <= 1",
    ),
    "train/random-subnets": Case(
        "nas.train_supernet",
        (*TRAIN, "report.random_subnets=-1"),
        "report.random_subnets must be an integer >= 0",
    ),
    "train/logger": Case(
        "nas.train_supernet",
        (*TRAIN, "logger=tensorboard"),
        "logger must be one of csv, wandb, got 'tensorboard'",
    ),
    "train/unknown-task": Case(
        "nas.train_supernet", (*TRAIN, "task=nope"), "Could not find 'task/nope'; available: charlm"
    ),
    "train/task-parameter": Case(
        "nas.train_supernet", (*TRAIN, "task.seq_len=0"), "task: MQAR.seq_len"
    ),
    "train/task-class-without-name": Case(
        "nas.train_supernet",
        (*TRAIN, "+task.target=user_task.NoName"),
        "has no `name`",
        (USER_TASK,),
    ),
    "train/space-file-missing": Case(
        "nas.train_supernet",
        (*TRAIN[1:], "+space=missing.yaml"),
        "+space=missing.yaml: no such file",
    ),
    "train/space-dim-word": Case(
        "nas.train_supernet",
        (*TRAIN[1:], "+space=space.yaml"),
        "space.yaml: field `dim`: expected choices that are positive integers, got 'wide'",
        (space_file(dim=[32, 48, "wide"]),),
    ),
    "train/space-operator-value": Case(
        "nas.train_supernet",
        (*TRAIN[1:], "+space=space.yaml"),
        "space.yaml: the hidden width must be >= 1",
        (space_file(channel={"mlp": {"ratio": [0, 2, 4]}, "swiglu": {"ratio": [2, 3]}}),),
    ),
    "train/out-is-a-file": Case(
        "nas.train_supernet",
        (*TRAIN, "out=notes.txt"),
        "out=notes.txt is a file",
        (write("notes.txt", "keep"),),
    ),
    # python -m nas.export
    "export/no-out": Case(
        "nas.export",
        (*EXPORT, "out=null"),
        "choose the export folder with out=DIR",
        search_run=True,
    ),
    "export/out-exists": Case(
        "nas.export",
        EXPORT,
        "out=export already exists",
        (write("export/keep.txt", "x"),),
        search_run=True,
    ),
    "export/out-is-run": Case(
        "nas.export",
        (*EXPORT, "out=run", "overwrite=true"),
        "out=run is the search run folder itself",
        search_run=True,
    ),
    "export/finetune-steps-negative": Case(
        "nas.export",
        (*EXPORT, "finetune_steps=-1"),
        "finetune_steps must be an integer >= 0",
        search_run=True,
    ),
    "export/retrain-without-steps": Case(
        "nas.export", (*EXPORT, "retrain=true"), "set finetune_steps=K > 0", search_run=True
    ),
    "export/run-missing": Case(
        "nas.export", (*EXPORT, "run=nowhere"), "run=nowhere: no run.json there"
    ),
    "export/run-json-truncated": Case(
        "nas.export", EXPORT, "run/run.json: ", (truncate("run/run.json"),), search_run=True
    ),
    "export/run-json-unknown-task": Case(
        "nas.export",
        EXPORT,
        "run/run.json: task: unknown task 'nope'",
        (edit_json("run/run.json", task={"name": "nope"}),),
        search_run=True,
    ),
    "export/study-db-truncated": Case(
        "nas.export",
        EXPORT,
        "run/study.db: cannot be read as an Optuna study",
        (truncate("run/study.db"),),
        search_run=True,
    ),
    "export/study-db-missing": Case(
        "nas.export",
        EXPORT,
        "run/study.db: no such SQLite file",
        (remove("run/study.db"),),
        search_run=True,
    ),
    "export/weights-truncated": Case(
        "nas.export",
        EXPORT,
        "run/supernet/supernet.safetensors: not a readable safetensors file",
        (truncate("run/supernet/supernet.safetensors"),),
        search_run=True,
    ),
    "export/weights-random-bytes": Case(
        "nas.export",
        EXPORT,
        "run/supernet/supernet.safetensors: not a readable safetensors file",
        (write("run/supernet/supernet.safetensors", RANDOM_BYTES),),
        search_run=True,
    ),
    "export/weights-pickle": Case(
        "nas.export",
        EXPORT,
        "run/supernet/supernet.safetensors: not a readable safetensors file",
        (write("run/supernet/supernet.safetensors", PICKLE),),
        search_run=True,
    ),
    "export/supernet-json-truncated": Case(
        "nas.export",
        EXPORT,
        "run/supernet/supernet.json: not valid JSON",
        (truncate("run/supernet/supernet.json"),),
        search_run=True,
    ),
    "export/supernet-missing": Case(
        "nas.export",
        EXPORT,
        "no saved supernet in run/supernet",
        (remove("run/supernet"),),
        search_run=True,
    ),
    "export/onnx-shape": Case(
        "nas.export",
        (*EXPORT, "onnx.shape=[0,16]"),
        "onnx.shape must be [batch, length] with positive integers or null, got [0, 16]",
        search_run=True,
    ),
    "export/latency-shape-rank": Case(
        "nas.export",
        (*EXPORT, "latency.shape=[1,16,16]"),
        "latency.shape must be [batch, length]",
        search_run=True,
    ),
    "export/pareto-csv-damaged": Case(
        "nas.export",
        EXPORT,
        "run/pareto.csv: ",
        (write("run/pareto.csv", "trial,signature\nfirst,sig0\n"),),
        search_run=True,
    ),
    "export/latency-threads-zero": Case(
        "nas.export",
        (*EXPORT, "latency.threads=0"),
        "latency.threads must be a positive integer",
        search_run=True,
    ),
    "export/latency-device": Case(
        "nas.export", (*EXPORT, "latency.device=tpu"), "latency.device: ", search_run=True
    ),
    "export/train-batch-size-zero": Case(
        "nas.export",
        (*EXPORT, "finetune_steps=2", "train.batch_size=0"),
        "train.batch_size must be a positive integer",
        search_run=True,
    ),
    "export/trials-unknown": Case(
        "nas.export", (*EXPORT, "trials=[9]"), "trials: no completed trial 9", search_run=True
    ),
    "export/trials-word": Case(
        "nas.export",
        (*EXPORT, "trials=slowest"),
        "trials must be pareto, best, fastest",
        search_run=True,
    ),
    # python -m nas.latency
    "latency/threads-zero": Case(
        "nas.latency.__main__",
        (*LATENCY, "threads=0"),
        "threads must be a positive integer or null, got 0",
    ),
    "latency/device": Case("nas.latency.__main__", (*LATENCY, "device=tpu"), "device: "),
    "latency/cpu-clock-threads": Case(
        "nas.latency.__main__",
        (*LATENCY, "clock=cpu", "threads=2"),
        "clock='cpu' times the calling thread only",
    ),
    "latency/arch-file-missing": Case(
        "nas.latency.__main__", (*LATENCY, "arch_file=missing.yaml"), "arch_file=missing.yaml"
    ),
    "latency/arch-file-not-yaml": Case(
        "nas.latency.__main__",
        (*LATENCY, "arch_file=arch.yaml"),
        "arch_file=arch.yaml: not valid YAML",
        (write("arch.yaml", "dim: [1\nlayers: {"),),
    ),
    "latency/shape": Case(
        "nas.latency.__main__",
        (*LATENCY, "latency_shape=[0,16]"),
        "latency_shape must be a list of positive integers",
    ),
    "latency/min-runs-zero": Case(
        "nas.latency.__main__",
        (*LATENCY, "measure.min_runs=0"),
        "measure.min_runs must be a positive integer",
    ),
    # python -m grafting.graft
    "graft/stage1-steps-negative": Case(
        "grafting.graft",
        (*GRAFT, "stage1.steps=-1"),
        "stage1.steps must be an integer >= 0, got -1",
    ),
    "graft/stage2-steps-negative": Case(
        "grafting.graft", (*GRAFT, "stage2.steps=-3"), "stage2.steps must be an integer >= 0"
    ),
    "graft/stage1-loss": Case(
        "grafting.graft", (*GRAFT, "stage1.loss=l3"), "stage1.loss must be one of"
    ),
    "graft/stage2-train": Case(
        "grafting.graft",
        (*GRAFT, "stage2.train=everything"),
        "stage2.train must be one of grafted, all, lora",
    ),
    "graft/eval-fraction": Case(
        "grafting.graft",
        (*GRAFT, "text.eval_fraction=1.5"),
        "text.eval_fraction must be a number > 0 and < 1",
    ),
    "graft/text-source-missing": Case(
        "grafting.graft", (*GRAFT, "text.source=missing.txt"), "text source 'missing.txt'"
    ),
    "graft/report-lengths": Case(
        "grafting.graft",
        (*GRAFT, "report.lengths=[0]"),
        "report.lengths must be a list of positive integers",
    ),
    "graft/threads-zero": Case(
        "grafting.graft", (*GRAFT, "threads=0"), "threads must be a positive integer or null"
    ),
    "graft/base-missing": Case(
        "grafting.graft", (*GRAFT, "base=nowhere"), "base 'nowhere' is neither a preset"
    ),
    "graft/base-corrupt-weights": Case(
        "grafting.graft",
        (*GRAFT, "base=host"),
        "base 'host': corrupt or incompatible checkpoint",
        (HOST, write("host/model.safetensors", RANDOM_BYTES)),
    ),
    "graft/base-config-truncated": Case(
        "grafting.graft",
        (*GRAFT, "base=host"),
        "base 'host': unreadable config.json",
        (HOST, truncate("host/config.json"), write("host/model.safetensors", RANDOM_BYTES)),
    ),
    "graft/plan-unknown": Case(
        "grafting.graft",
        (*GRAFT, "plan=no_such_plan"),
        "plan=no_such_plan: no graft config 'no_such_plan'",
    ),
    "graft/plan-not-yaml": Case(
        "grafting.graft",
        (*GRAFT, "plan=plan.yaml"),
        "plan=plan.yaml: graft plan plan.yaml is not valid YAML",
        (write("plan.yaml", "grafts: [x\nname: {"),),
    ),
    "graft/plan-unknown-slot": Case(
        "grafting.graft",
        (*GRAFT, "plan=plan.yaml"),
        "plan=plan.yaml: grafts[0]: unknown slot 'attention'",
        (write("plan.yaml", "grafts: [{layers: all, attention: {name: linear}}]\n"),),
    ),
    "graft/plan-for-dit": Case(
        "grafting.graft",
        (*GRAFT, "plan=dit_parallel_pairs"),
        "restructure=parallel_pairs is for DiT hosts",
    ),
    "graft/plugin-missing": Case(
        "grafting.graft", (*GRAFT, "plugins=[no_such_plugin]"), "plugin 'no_such_plugin'"
    ),
    "graft/out-not-empty": Case(
        "grafting.graft",
        GRAFT,
        "out 'graft' exists and is not empty",
        (write("graft/keep.txt", "x"),),
    ),
    # python -m grafting.export
    "graft-export/run-missing": Case(
        "grafting.export", GRAFT_EXPORT, "run=graft: no such directory"
    ),
    "graft-export/run-not-grafted": Case(
        "grafting.export",
        GRAFT_EXPORT,
        "run=graft: not a grafted model folder",
        (write("graft/notes.txt", "x"),),
    ),
    "graft-export/no-out": Case(
        "grafting.export",
        (*GRAFT_EXPORT, "out=null"),
        "choose the export folder with out=DIR",
        GRAFTED,
    ),
    "graft-export/out-is-run": Case(
        "grafting.export",
        (*GRAFT_EXPORT, "out=graft"),
        "out=graft is the graft folder itself",
        GRAFTED,
    ),
    "graft-export/onnx-shape": Case(
        "grafting.export",
        (*GRAFT_EXPORT, "onnx.shape=[0,16]"),
        "onnx.shape must be [batch, length] with positive integers",
        GRAFTED,
    ),
    "graft-export/threads-zero": Case(
        "grafting.export",
        (*GRAFT_EXPORT, "threads=0"),
        "threads must be a positive integer or null",
        GRAFTED,
    ),
    "graft-export/plugin-missing": Case(
        "grafting.export",
        (*GRAFT_EXPORT, "plugins=[no_such_plugin]"),
        "plugin 'no_such_plugin'",
        GRAFTED,
    ),
    "graft-export/weights-corrupt": Case(
        "grafting.export", GRAFT_EXPORT, "run=graft: cannot load the grafted model", GRAFTED
    ),
    # python -m grafting.plan_search
    "plan-search/trials-zero": Case(
        "grafting.plan_search.__main__",
        (*PLAN_SEARCH, "search.trials=0"),
        "search.trials must be a positive integer",
    ),
    "plan-search/finalize-k": Case(
        "grafting.plan_search.__main__",
        (*PLAN_SEARCH, "finalize.k=-1"),
        "finalize.k must be an integer >= 0",
    ),
    "plan-search/threads-zero": Case(
        "grafting.plan_search.__main__",
        (*PLAN_SEARCH, "threads=0"),
        "threads must be a positive integer or null",
    ),
    "plan-search/unknown-graft-space": Case(
        "grafting.plan_search.__main__",
        (*PLAN_SEARCH, "graft_space=nope"),
        "graft_space=nope: no graft_spaces config 'nope'",
    ),
    "plan-search/plugin-missing": Case(
        "grafting.plan_search.__main__",
        (*PLAN_SEARCH, "plugins=[no_such_plugin]"),
        "plugin 'no_such_plugin'",
    ),
    "plan-search/out-not-a-search": Case(
        "grafting.plan_search.__main__",
        PLAN_SEARCH,
        "out 'search' exists and is not a plan-search folder",
        (write("search/keep.txt", "x"),),
    ),
}


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("search"))


def copy_search_run(source: Path, root: Path) -> None:
    """``root/run``: a copy of ``source`` whose ``run.json`` names its own study file."""
    shutil.copytree(source, root / "run")
    info = json.loads((root / "run" / "run.json").read_text())
    info["storage"] = "sqlite:///run/study.db"
    (root / "run" / "run.json").write_text(json.dumps(info))


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its modification time and (files) bytes; a folder's mtime
    changes when anything is created in it, even a temporary file removed again."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def params() -> list:
    """The table as pytest parameters; a case known to fail yet is a strict xfail."""
    out = []
    for name, case in CASES.items():
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        out.append(pytest.param(case, id=name, marks=marks))
    return out


@pytest.mark.parametrize("case", params())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: Case, tmp_path, monkeypatch, capsys, request
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # where a case's user module lives
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # ... importing it writes nothing
    monkeypatch.delenv("NAS_TRACEBACK", raising=False)
    if case.search_run:
        copy_search_run(request.getfixturevalue("search_run"), tmp_path)
    for prepare in case.prepare:
        prepare(tmp_path)
    before = tree(tmp_path)
    main = importlib.import_module(case.command).main
    try:
        code = main(list(case.argv))
    finally:
        sys.modules.pop("user_task", None)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert case.names in err and "Traceback" not in err, err
    assert tree(tmp_path) == before, "the failed command changed its folder"


def test_the_table_covers_the_commands() -> None:
    per_command: dict[str, int] = {}
    for case in CASES.values():
        per_command[case.command] = per_command.get(case.command, 0) + 1
    assert len(CASES) >= 40 and len(per_command) >= 4, per_command
    for command in ("nas.search", "nas.train_supernet", "nas.export", "grafting.graft"):
        assert per_command[command] >= 10, per_command


# -- a bug is not bad input ------------------------------------------------------------------
@pytest.mark.parametrize("error", [KeyError("layer3"), ValueError("shapes differ"), TypeError("x")])
def test_a_bug_keeps_its_traceback(error: Exception, capsys) -> None:
    """An exception a command does not raise as a user error is a bug, even a ValueError or a
    KeyError: the command says so and re-raises it (the interpreter exits with status 1)."""

    def buggy(cfg) -> int:
        raise error

    with pytest.raises(type(error)):
        run_cli(buggy, "latency", [])
    assert capsys.readouterr().err == INTERNAL_ERROR + "\n"


def test_a_bug_inside_a_command_is_not_reported_as_bad_input(tmp_path, monkeypatch, capsys) -> None:
    import nas.train_supernet

    def bug(*args, **kwargs):
        raise KeyError("head")  # e.g. a dictionary lookup that went wrong

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nas.train_supernet, "train_supernet", bug)
    with pytest.raises(KeyError, match="head"):
        nas.train_supernet.main(list(TRAIN))
    assert INTERNAL_ERROR in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [UsageError("bad"), SpaceError("s.yaml", "dim", "integers", "x"), FileNotFoundError("f.txt")],
)
def test_user_errors_are_one_line(error: Exception, capsys) -> None:
    def user_mistake(cfg) -> int:
        raise error

    assert run_cli(user_mistake, "latency", []) == 2
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"


def test_a_bug_exits_1_with_its_traceback() -> None:
    """The whole way, in a fresh interpreter: exit status 1, the line, then the traceback."""
    script = "import sys\nfrom search_spaces.cli import run_cli\nsys.exit(run_cli(lambda cfg: {}['x'], 'latency', []))\n"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120
    )
    err = result.stderr
    assert result.returncode == 1 and INTERNAL_ERROR + "\n" in err and "Traceback" in err, err
    assert err.index(INTERNAL_ERROR) < err.index("Traceback") and err.rstrip().endswith(
        "KeyError: 'x'"
    )
