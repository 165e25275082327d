"""A search run directory following the contract of ``nas/search.py`` (run.json, study.db,
supernet/, pareto.csv), made without a search: shared by the export tests and the bad-input
table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import torch
import yaml

from nas.tasks import get_task
from search_spaces.space import load_space
from supernet.io import save_supernet
from supernet.supernet import Supernet

TASK = {
    "name": "mqar",
    "vocab_size": 16,
    "seq_len": 16,
    "num_pairs": 4,
    "num_train": 64,
    "num_val": 16,
    "num_test": 16,
    "batch_size": 8,
    "latency_shape": [1, 16],
}
SPACE = {
    "name": "tiny",
    "head_dim": 8,
    "dim": [16, 24],
    "depth": [1, 2],
    "norm": ["layernorm"],
    "block": ["sequential"],
    "norm_placement": ["pre"],
    "pos_embedding": "none",
    "loop": None,
    "head": {"kind": "lm", "vocab_size": 16, "max_len": 16},
    "mixer": {"softmax": {"heads": [2]}, "linear": {"heads": [2], "feature_map": ["elu1"]}},
    "channel": {"mlp": {"ratio": [2]}},
    "references": {
        "baseline": {
            "dim": 24,
            "depth": 2,
            "norm": "layernorm",
            "mixer": {"name": "softmax", "heads": 2},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "teacher": {
            "dim": 24,
            "depth": 2,
            "norm": "layernorm",
            "mixer": {"name": "softmax", "heads": 2},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "smallest": {
            "dim": 16,
            "depth": 1,
            "norm": "layernorm",
            "mixer": {"name": "linear", "heads": 2, "feature_map": "elu1"},
            "channel": {"name": "mlp", "ratio": 2},
        },
    },
}
# (val metric, latency ratio): 0 and 1 are the Pareto front, 2 is dominated, 3 has a broken arch,
# 4 repeats trial 1's architecture: on the study's raw front, not on the one-per-architecture front
VALUES = [(0.5, 1.0), (0.3, 0.5), (0.2, 0.9), (0.1, 2.0), (0.31, 0.55)]
REPEATS = {4: 1}


def make_run(root: Path) -> Path:
    """A search run directory following the contract of ``nas/search.py`` (see nas.export)."""
    run = root / "run"
    run.mkdir()
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    space, task = load_space(root / "space.yaml"), get_task(TASK)
    torch.manual_seed(0)
    save_supernet(Supernet(space, head=task.head()), run / "supernet", task=TASK)
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.create_study(
        directions=["maximize", "minimize"], storage=storage, study_name="s"
    )
    study.set_user_attr("run_dir", str(run))  # how storage= + study_name= find the run
    archs = [space.teacher(task.head()), space.smallest(task.head()), space.baseline(task.head())]
    rows = []
    for n, (metric, ratio) in enumerate(VALUES):
        k = REPEATS.get(n, n)
        arch = archs[k].to_dict() if k < 3 else {"dim": -1}
        attrs = {
            "arch": arch,
            "signature": f"sig{k}",
            "val_metric": metric,
            "latency_ms": 10 * ratio,
            "latency_ratio": ratio,
            "latency_source": "measured",
            "params": 1000 + n,
            "flops": 2000 + n,
        }
        study.add_trial(optuna.trial.create_trial(values=[metric, ratio], user_attrs=attrs))
        if n < 2:
            rows.append(
                {
                    "trial": n,
                    "val_metric": f"{metric:.4f}",
                    "test_metric": f"{metric - 0.01:.4f}",
                    "latency_ms": f"{10 * ratio:.3f}",
                    "latency_ratio": f"{ratio:.3f}",
                    "latency_source": "measured",
                    "params": 1000 + n,
                    "flops": 2000 + n,
                    "signature": f"sig{n}",
                    "beats_baseline": n == 0,
                }
            )
    with (run / "pareto.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "space": "tiny",
        "task": TASK,
        "supernet": "supernet",
        "storage": storage,
        "study_name": "s",
        "seed": 0,
        "metric": "accuracy",
        "direction": "maximize",
        "latency_shape": [1, 16],
        "device": {"device": "cpu"},
        "git_commit": "abc123",
        "versions": {},
    }
    (run / "run.json").write_text(json.dumps(meta))
    return run
