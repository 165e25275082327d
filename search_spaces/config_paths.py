"""Where configuration files are found: the user's own directories first, then the ``conf``
package installed with the platform (so lookups work outside the repository too).

Users add directories with the ``NAS_CONFIG_PATH`` environment variable (``os.pathsep``
separated), each laid out like ``conf/`` (``arch/``, ``space/``, ...).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "NAS_CONFIG_PATH"


def config_dirs() -> list[Path]:
    """Configuration roots in lookup order."""
    user = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return user + [Path(str(resources.files("conf")))]


def available(group: str) -> list[str]:
    """Names of the configs of ``group`` (e.g. ``"arch"``) across all roots."""
    names = {p.stem for root in config_dirs() for p in (root / group).glob("*.yaml")}
    return sorted(names)


def find_config(group: str, name_or_path: str | os.PathLike) -> Path:
    """A config file by name within ``group``, or an existing path given directly."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    for root in config_dirs():
        candidate = root / group / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {group} config {str(name_or_path)!r}: not a file, and not one of {available(group)}"
    )


def read_config(group: str, name_or_path: str | os.PathLike, what: str) -> tuple[Any, Path]:
    """(parsed YAML, path) of a config found by ``find_config``; ``ValueError`` naming ``what``
    (e.g. "graft plan") and the file when it is not valid YAML."""
    path = find_config(group, name_or_path)
    try:
        return yaml.safe_load(path.read_text()), path
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {e}") from None
