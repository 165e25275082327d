"""What every command line of the platform shares: composing the Hydra config from ``conf/``,
loading the space named by ``+space=``, importing user plugins, and turning user errors into one
clear line on stderr with exit status 2 (``NAS_TRACEBACK=1`` shows the traceback instead).
A user error is a ``UsageError`` (raised where a setting is checked, see
``search_spaces.checks``, or by ``user_input`` where input enters), a Hydra composition error, or
a missing file; anything else is a bug: its traceback is printed after a line saying so, and the
command exits with status 1.
``--help`` prints the command's options (its config files with their comments, and the names each
config group offers); ``--cfg job`` prints the composed config, as Hydra's own flag does.

Commands compose their config with Hydra's compose API rather than ``@hydra.main`` so that they
control error reporting and never change the working directory.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search_spaces.checks import first_line
from search_spaces.config_paths import ENV_VAR, available, config_dirs
from search_spaces.errors import UsageError
from search_spaces.space import SearchSpace, load_space

# what a command reports as one line with exit status 2; FileNotFoundError: a path the user named
USER_ERRORS = (UsageError, FileNotFoundError, HydraException, OmegaConfBaseException)
INTERNAL_ERROR = "internal error (a bug, not your input): please report it with the traceback below"


def compose_config(config_name: str, argv: Sequence[str]) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line ``key=value`` overrides.

    ``+space=PATH.yaml`` (a file, which must exist) is accepted besides ``+space=NAME``; user
    config directories in ``NAS_CONFIG_PATH`` are searched before the packaged ``conf``."""
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "space" and Path(value).suffix in (".yaml", ".yml"):
            if not Path(value).is_file():
                raise UsageError(f"{arg}: no such file")
            arg = f"+space_file={Path(value).resolve()}"
        overrides.append(arg)
    user_dirs = [str(d) for d in config_dirs()[:-1]]
    if user_dirs:
        overrides.append(f"hydra.searchpath=[{','.join('file://' + d for d in user_dirs)}]")
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def import_plugins(cfg: DictConfig) -> None:
    """Import the user's modules listed in ``plugins`` (their operators register on import)."""
    import_modules(cfg.get("plugins") or [])


def import_modules(modules: Sequence[str]) -> None:
    """Import ``modules`` by name; ``UsageError`` naming the first that cannot be imported."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"plugin {module!r} could not be imported: {e}") from None


def space_from_config(cfg: DictConfig) -> SearchSpace:
    """The space chosen with ``+space=NAME`` (composed into ``cfg.space``) or ``+space=FILE``."""
    if cfg.get("space_file"):
        return load_space(cfg.space_file)
    if cfg.get("space") is None:
        raise UsageError(
            f"choose a search space with +space=NAME; available: {', '.join(available('space'))}"
        )
    data = OmegaConf.to_container(cfg.space, resolve=True)
    return SearchSpace(data, source=f"conf/space/{data.get('name', '?')}.yaml")


GROUPS = (
    "space",
    "task",
    "preset",
    "arch",
    "graft",
    "graft_spaces",
    "search_samplers",
)  # config groups a command may name


def usage(config_name: str) -> str:
    """What ``--help`` prints: ``conf/<config_name>.yaml`` and the files it extends, as shipped
    (every key, its default and its comment), then the names offered by each group they use."""
    conf = importlib.resources.files("conf")
    names, texts = [config_name], []
    while names:
        text = conf.joinpath(f"{names.pop(0)}.yaml").read_text()
        texts.append(text.rstrip())
        names += [
            n
            for n in re.findall(r"^  - (\w+)$", text, re.M)
            if conf.joinpath(f"{n}.yaml").is_file()
        ]
    words = set(re.findall(r"\w+", "\n".join(texts)))
    groups = [f"#   {g}: {', '.join(available(g))}" for g in GROUPS if g in words and available(g)]
    return "\n\n".join(
        [
            *texts,
            "# choices of the config groups (GROUP=NAME; the space with +space=NAME or +space=FILE.yaml; search_samplers with search.sampler=NAME, graft_spaces with graft_space=NAME):\n"
            + "\n".join(groups),
            "# any key above can be set as key=value; --cfg job prints the composed config; "
            "NAS_TRACEBACK=1 shows tracebacks",
        ]
    )


def _message(e: BaseException) -> str:
    """The one line a user error is reported with; an unknown config group option lists the
    available ones."""
    text = str(e)
    if "Could not find 'space/" in text or "Could not load 'space/" in text:
        return f"unknown search space; available: {', '.join(available('space'))} (or +space=path/to/space.yaml)"
    found = re.search(r"Could not find '(\w+)/", text)
    if found and available(found.group(1)):
        return f"{first_line(e)}; available: {', '.join(available(found.group(1)))}"
    return first_line(e)


def run_cli(
    main: Callable[[DictConfig], int | None], config_name: str, argv: Sequence[str] | None = None
) -> int:
    """Compose the config and run ``main``; user errors (``USER_ERRORS``) become one line and
    exit status 2, any other exception is re-raised after a line saying it is a bug.
    ``--help``/``-h`` prints ``usage``; ``--cfg job`` prints the composed config; both exit 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "-h" in argv:
        print(usage(config_name))
        return 0
    show = argv[-2:] == ["--cfg", "job"] or "--cfg=job" in argv
    argv = [a for a in (argv[:-2] if argv[-2:] == ["--cfg", "job"] else argv) if a != "--cfg=job"]
    try:
        cfg = compose_config(config_name, argv)
        if show:
            print(OmegaConf.to_yaml(cfg, resolve=False), end="")
            return 0
        return int(main(cfg) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("NAS_TRACEBACK"):
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception:
        print(INTERNAL_ERROR, file=sys.stderr, flush=True)
        raise


__all__ = [
    "ENV_VAR",
    "INTERNAL_ERROR",
    "USER_ERRORS",
    "UsageError",
    "compose_config",
    "import_modules",
    "import_plugins",
    "run_cli",
    "space_from_config",
]
