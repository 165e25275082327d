"""``common.atomic``: a failed write leaves the old output byte for byte and no temporary file;
a successful one replaces it; new files and folders follow the umask."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.atomic import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    process_tag,
)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (itself included), with file contents."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): p.read_bytes() if p.is_file() else None for p in paths}


def test_file_write_replaces_and_a_failed_one_keeps_the_old(tmp_path) -> None:
    path = tmp_path / "table.csv"
    assert atomic_write_text(path, "old\n") == path and path.read_text() == "old\n"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a new fi")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temporary file left
    atomic_write_bytes(path, b"\x00new")
    assert path.read_bytes() == b"\x00new" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_folder_write_replaces_and_a_failed_one_keeps_the_old(tmp_path) -> None:
    out = tmp_path / "export"
    with atomic_dir(out) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == tmp_path
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.bin").write_bytes(b"\x01\x02")
        (tmp / "b.txt").write_text("old")
    before = _snapshot(out)
    assert before == {
        "export": None,
        "export/b.txt": b"old",
        "export/sub": None,
        "export/sub/a.bin": b"\x01\x02",
    }
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("new")
        raise KeyboardInterrupt
    assert _snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["export"]
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("new")
    assert _snapshot(out) == {"export": None, "export/c.txt": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # the old one is gone, no temp


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch) -> None:
    """The old output is renamed aside, not deleted, until the new one is in place."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    real_replace = os.replace

    def replace(src, dst):  # the rename of the new folder onto `out` fails
        if Path(src).name.endswith(".partial"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("y")
    assert _snapshot(out) == {"out": None, "out/keep.txt": b"x"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask) -> None:
    previous = os.umask(umask)
    try:
        file = atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path) -> None:
    """SIGKILL leaves a writer no chance to clean up: the next write to the same destination
    removes the temporary names of dead processes of this machine, and only those."""
    code = (
        "import os, sys; from common.atomic import atomic_dir, atomic_path\n"
        "out = sys.argv[1]\n"
        "with atomic_path(out + '/table.csv'), atomic_dir(out + '/export') as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x'); os.kill(os.getpid(), 9)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env)
    assert done.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(name.startswith((".table.csv.", ".export.")) for name in left)
    alive = tmp_path / f".export.{os.getppid()}-{process_tag().split('-')[1]}.abc.partial"
    alive.mkdir()  # a running writer's folder stays
    other_host = tmp_path / ".export.1-ffffff.abc.partial"
    other_host.mkdir()  # another machine's, on a shared disk, stays
    atomic_write_text(tmp_path / "table.csv", "a\n")
    with atomic_dir(tmp_path / "export") as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, other_host.name, "export", "table.csv"]
    )
