"""The import layering of the platform (``../shared/GUIDE.md``, section 1), read from the source:

    common  <-  search_spaces  <-  supernet  <-  nas
                             ^-----------------  grafting      (nas and grafting are siblings)

A package imports only packages of lower layers. Checked are ``import`` statements (also inside
functions), string constants that name a module of a forbidden package (``get_method("nas.x.f")``,
``importlib.import_module(...)``) and the dotted paths in the config a package's command
composes (``run_cli(..., "train_supernet")`` reads ``conf/train_supernet.yaml``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "search_spaces", "supernet", "nas", "grafting")
FORBIDDEN = {
    "common": {"search_spaces", "supernet", "nas", "grafting"},
    "search_spaces": {"supernet", "nas", "grafting"},
    "supernet": {"nas", "grafting"},
    "nas": {"grafting"},
    "grafting": {"nas"},
}
# Known violations, each (file relative to the repository root, the module it names). Remove an
# entry when its violation is fixed (a stale entry fails the test); never add one without an issue.
ALLOWED: set[tuple[str, str]] = set()
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` starts with a module of the repository (``nas.tasks.get_task`` does,
    ``supernet.json``, a file name, does not)."""
    parts = dotted.split(".")
    return any(
        (ROOT.joinpath(*parts[:n]).with_suffix(".py")).is_file()
        or (ROOT.joinpath(*parts[:n]) / "__init__.py").is_file()
        for n in range(2, len(parts) + 1)
    )


def _named_in_python(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute imports) or names in a string constant."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if DOTTED.fullmatch(node.value) and _is_module(node.value):
                yield node.value


def _strings(data: object) -> Iterator[str]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
    elif isinstance(data, str):
        yield data


def _command_configs(path: Path) -> Iterator[Path]:
    """The ``conf/<name>.yaml`` of every ``run_cli(main, "<name>", ...)`` call in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "run_cli"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            yield ROOT / "conf" / f"{node.args[1].value}.yaml"


def references(package: str) -> Iterator[tuple[str, str]]:
    """``(file, module)`` for every module that ``package``'s code and command configs name."""
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for module in _named_in_python(path):
            yield rel, module
        for config in _command_configs(path):
            if config.is_file():
                for text in _strings(yaml.safe_load(config.read_text())):
                    if DOTTED.fullmatch(text) and _is_module(text):
                        yield str(config.relative_to(ROOT)), text


def test_no_package_imports_upward() -> None:
    found = {
        (where, module)
        for package in PACKAGES
        for where, module in references(package)
        if module.split(".")[0] in FORBIDDEN[package]
    }
    new = sorted(found - ALLOWED)
    assert not new, "imports against the layering (GUIDE.md, section 1):\n" + "\n".join(
        f"  {where}: {module}" for where, module in new
    )
    stale = sorted(ALLOWED - found)
    assert not stale, f"fixed violations still in ALLOWED (remove them): {stale}"


def test_the_checker_sees_imports_and_dotted_strings(tmp_path) -> None:
    """The checker finds what it must: plain, from-, nested imports and module-naming strings."""
    source = tmp_path / "m.py"
    source.write_text(
        "import nas.study\nfrom grafting import io\nfrom . import sibling\n"
        "def f():\n    from supernet.io import save_supernet\n"
        "    return get_method('nas.tasks.get_task'), 'supernet.json', 'see nas.tasks'\n"
    )
    assert sorted(_named_in_python(source)) == [
        "grafting",
        "nas.study",
        "nas.tasks.get_task",
        "supernet.io",
    ]
