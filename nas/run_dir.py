"""The run directory of a search: where its supernet, study, reports and provenance live.

A run directory belongs to one *identity*: the space, the task, the objectives (metric, latency
shape and device, how a subnet is scored) and the supernet's training budget. The identity is
recorded in ``run.json`` at the first run; a later run with the same identity resumes, one with a
different identity is refused with the fields that differ (never silently mixing two studies).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from search_spaces.cli import UsageError

RUN_JSON = "run.json"
PACKAGES = ("torch", "optuna", "lightning", "hydra-core", "transformers", "timm")


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short stable hash of an identity mapping (JSON with sorted keys)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``field: recorded -> current`` for every leaf that differs, in sorted order."""
    a, b = (
        _flatten(json.loads(json.dumps(recorded, default=str))),
        _flatten(json.loads(json.dumps(current, default=str))),
    )
    missing = object()
    return [
        f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}".replace(repr(missing), "(absent)")
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def git_commit() -> str | None:
    """The commit of the platform's checkout, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


class RunDir:
    """``path`` and the files in it; ``claim(identity)`` checks or records the identity."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def supernet(self) -> Path:
        return self.path / "supernet"

    @property
    def study_db(self) -> Path:
        return self.path / "study.db"

    def read(self) -> dict[str, Any]:
        """The recorded ``run.json`` (empty if there is none yet)."""
        if not self.run_json.is_file():
            return {}
        try:
            return json.loads(self.run_json.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{self.run_json} is not valid JSON ({e})") from None

    def claim(self, identity: Mapping[str, Any]) -> bool:
        """Record ``identity`` in a new run directory, or check it against the recorded one.
        Returns True when resuming; raises ``UsageError`` listing the differences otherwise."""
        recorded = self.read()
        if not recorded:
            self.path.mkdir(parents=True, exist_ok=True)
            self.update(identity=dict(identity), config_hash=identity_hash(identity))
            return False
        if recorded.get("config_hash") != identity_hash(identity):
            diff = differences(recorded.get("identity", {}), identity)
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise UsageError(
                f"run_dir {self.path} holds a search with a different configuration ({shown}); "
                f"choose another run_dir= or remove it"
            )
        return True

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into ``run.json`` (written atomically)."""
        data = {**self.read(), **fields}
        atomic_write_text(self.run_json, json.dumps(data, indent=2, default=str))
