"""Where a study lives: one URL names an Optuna storage, checked before any work.

- ``sqlite:///PATH`` (the default, ``<run_dir>/study.db``): one machine, one worker at a time.
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`` (or ``mysql+pymysql://...``): many workers on
  many machines. A bare ``postgresql://`` uses the installed psycopg (3) driver.
- ``journal:///PATH``: Optuna's ``JournalStorage`` on a log file; many worker processes on one
  machine without a database server (file locks: not over NFS). No heartbeats.
- ``grpc://HOST:PORT``: a gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``) in front
  of one database, for hundreds of workers (needs ``pip install grpcio``).

On RDB storages (SQLite, PostgreSQL, MySQL) every running trial sends a heartbeat; a trial whose
worker died (SIGKILL, a lost machine) is marked failed once its heartbeat is ``grace_period``
seconds old, and retried as a new trial with the same parameters by the next worker that starts a
trial (Optuna's ``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from search_spaces.cli import UsageError

JOURNAL, GRPC = "journal:///", "grpc://"
MAX_RETRY = 2  # a trial whose worker died is retried at most this often (then it stays failed)


def masked(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _rdb_url(url: str) -> str:
    """SQLAlchemy's bare ``postgresql://`` means psycopg2; the platform installs psycopg 3."""
    return (
        "postgresql+psycopg://" + url[len("postgresql://") :]
        if url.startswith("postgresql://")
        else url
    )


def _grpc_address(url: str) -> tuple[str, int]:
    host, _, port = url[len(GRPC) :].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"storage {url!r}: a gRPC proxy is named grpc://HOST:PORT")
    return host, int(port)


def check_storage(url: str, key: str = "search.storage") -> None:
    """Raise ``UsageError`` (naming ``key``) unless Optuna can open ``url``: a known scheme whose
    driver is installed and, for files, an existing folder. Opens nothing."""
    if url.startswith(JOURNAL):
        folder = Path(url[len(JOURNAL) - 1 :]).parent
        if not folder.is_dir():
            raise UsageError(f"{key} {url!r}: the folder {folder} does not exist")
        return
    if url.startswith(GRPC):
        _grpc_address(url)
        try:
            import grpc  # noqa: F401
        except ImportError:
            raise UsageError(f"{key} {url!r}: a gRPC proxy needs `pip install grpcio`") from None
        return
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(_rdb_url(url))
        parsed.get_dialect().import_dbapi()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
        raise UsageError(
            f"{key} {masked(url)!r} is not a usable storage URL ({e}); use sqlite:///PATH, postgresql://..., journal:///PATH or grpc://HOST:PORT"
        ) from None
    except ImportError as e:
        raise UsageError(
            f"{key} {masked(url)!r}: its database driver is not installed ({e})"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise UsageError(f"{key} {url!r}: the folder {folder} does not exist")
        if Path(parsed.database).is_file():
            _check_sqlite_file(Path(parsed.database), key)


def _check_sqlite_file(path: Path, key: str) -> None:
    """An existing SQLite file must be a database (a truncated or foreign file is refused
    before a supernet trains for minutes); opened read-only, nothing is created."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            con.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{key}: {path} is not a usable SQLite database ({e})") from None


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> BaseStorage:
    """The Optuna storage ``url`` names; RDB storages get heartbeats when ``heartbeat_interval``
    is set (stale trials failed after ``grace_period`` s, default twice the interval, and
    retried)."""
    if url.startswith(JOURNAL):
        backend = optuna.storages.journal.JournalFileBackend(url[len(JOURNAL) - 1 :])
        return optuna.storages.JournalStorage(backend)
    if url.startswith(GRPC):
        host, port = _grpc_address(url)
        return optuna.storages.GrpcStorageProxy(host=host, port=port)
    heartbeat = {}
    with warnings.catch_warnings():  # experimental since Optuna 2.x: not the user's concern
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_interval:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            heartbeat = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                "heartbeat_stale_trial_callback": retry,
            }
        engine = {"pool_pre_ping": True} if not url.startswith("sqlite") else None
        return optuna.storages.RDBStorage(_rdb_url(url), engine_kwargs=engine, **heartbeat)


def has_heartbeats(url: str, heartbeat_interval: int | None) -> bool:
    """Whether a dead worker's trial will be failed (and retried) on the storage ``url`` names."""
    return bool(heartbeat_interval) and not url.startswith((JOURNAL, GRPC))
