"""The one way to write a file or a folder atomically.

Output is built under a hidden temporary name beside its destination (same directory, so the
same file system) and renamed onto the destination only when it is complete. A failure (an
exception in the ``with`` block, a full disk, Ctrl-C) leaves the previous output byte for byte as
it was and removes the temporary file or folder. New files and folders get the permissions the
user's umask gives (``tempfile`` would leave them private, 0600/0700).

Atomic against a failing process, not a durability guarantee: nothing is fsync'ed. Temporary
names carry the writer's process id; a process killed with SIGKILL cannot clean up, so the next
write to the same destination removes what dead processes left (``sweep_stale``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "process_tag",
    "sweep_stale",
]


def _umask() -> int:
    """The process umask; read from /proc where possible (``os.umask`` must set it to read it,
    which briefly changes it for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def process_tag() -> str:
    """``<pid>-<host>``: which process on which machine a temporary name belongs to."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
    return f"{os.getpid()}-{host}"


def sweep_stale(directory: str | os.PathLike, prefix: str) -> None:
    """Remove the ``PREFIX<process_tag>.*`` entries of ``directory`` left by processes of this
    machine that no longer run (another machine's, on a shared disk, are left alone)."""
    directory, host = Path(directory), process_tag().split("-")[1]
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid, _, tag_host = entry.name[len(prefix) :].split(".", 1)[0].partition("-")
        if pid.isdigit() and tag_host == host and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(entry)


def _prefix(path: Path) -> str:
    """The hidden temporary-name prefix for ``path`` in this process (see ``sweep_stale``)."""
    sweep_stale(path.parent, f".{path.name}.")
    return f".{path.name}.{process_tag()}."


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (an empty file exists there) to write into;
    it replaces ``path`` when the block succeeds and is removed when it fails. Parent folders
    are created.

    >>> with atomic_path("table.csv") as tmp, tmp.open("w") as f:
    ...     f.write("a,b\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only if something failed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to build a folder in; when the block
    succeeds it takes the place of ``path`` (an existing file or folder there is replaced),
    when it fails it is removed and ``path`` is left as it was.

    The old output is renamed aside, the new one renamed into place, and only then is the old
    one deleted; if the second rename fails the old one is renamed back. (POSIX has no portable
    atomic swap of two folders, so ``path`` is missing for the instant between the renames.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".partial", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
            return
        old = path.with_name(f"{_prefix(path)}{secrets.token_hex(4)}.old")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        _remove(old)
    finally:
        if tmp.exists():  # still there only if something failed
            shutil.rmtree(tmp, ignore_errors=True)
