"""SQLite (WAL): the default buffer, one file under ``data_dir``.

Several processes on one host may share the file: ``BEGIN IMMEDIATE`` takes SQLite's write lock
up front, so writers serialise cleanly and the dictionary rows re-read inside it stay exact.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sentiloop.buffer.dialect import Connection, migrate
from sentiloop.buffer.schema import SQLITE, migrations
from sentiloop.buffer.sql_store import SQLBufferReader, SQLBufferStore
from sentiloop.errors import BufferFileError, NotInitialised, StorageUnavailable
from sentiloop.models.word_sentiment import WordSentimentModel

if TYPE_CHECKING:
    from sentiloop.config import Settings

# Buffers written before versioning have every version-1 table and no schema_version row (unversioned=1).
MIGRATIONS = migrations(SQLITE)
SCHEMA = MIGRATIONS[1]
SCHEMA_VERSION = max(MIGRATIONS)


# SQLite result codes that mean "the storage cannot take writes now", by metric label. Anything
# else (a constraint, a value SQLite cannot bind) is about one record, not about the store.
_UNAVAILABLE_CODES = {
    "SQLITE_FULL": "disk_full",
    "SQLITE_READONLY": "read_only",
    "SQLITE_PERM": "read_only",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_PROTOCOL": "locked",
    "SQLITE_IOERR": "io_error",
    "SQLITE_CANTOPEN": "cant_open",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
}
_OS_KINDS = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only", errno.EACCES: "read_only",
             errno.EPERM: "read_only"}


def storage_failure(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` amounts to, or None when it is not a storage failure.

    Generic ``OperationalError``/``DatabaseError`` count as storage failures even without a known code:
    pausing and retrying is safe, while calling them a bad record would send good events to the DLQ.
    """
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, OSError):
        return StorageUnavailable(_OS_KINDS.get(exc.errno or 0, "io_error"), str(exc))
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    base = "_".join(name.split("_")[:2])
    return StorageUnavailable(_UNAVAILABLE_CODES.get(base, "sqlite_error"), f"{exc} ({name or 'no result code'})")


def _not_a_buffer(path: Path, exc: sqlite3.Error) -> BufferFileError:
    return BufferFileError(
        f"{path} is not a usable sentiloop buffer (SQLite: {exc}). If data_dir points at the wrong place, fix "
        f"data_dir; if this is a damaged buffer, move it aside (mv {path} {path}.damaged; also its -wal/-shm files) "
        "and start again: sentiloop creates a new buffer, and `sqlite3 FILE .recover` may rescue the old events."
    )


def _is_not_a_database(exc: sqlite3.Error) -> bool:
    return str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))


class SQLiteDialect:
    """One buffer file; WAL so readers never block the writer."""

    name = "sqlite"
    label_arrival = "rowid"

    def __init__(self, path: Path, synchronous: str = "FULL", lock_timeout_s: float = 10.0) -> None:
        self.path = path
        self.location = str(path)
        self.synchronous = synchronous
        self.lock_timeout_s = lock_timeout_s

    def connect(self, *, readonly: bool = False) -> Connection:
        """A connection; read-only ones refuse a missing file or one that is not a database, with what to do."""
        if readonly and not self.path.exists():
            raise NotInitialised(f"no buffer at {self.path}: start the daemon (`sentiloop run`) with this data_dir first")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.lock_timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.lock_timeout_s * 1000)}")
            if readonly:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            if _is_not_a_database(exc):
                raise _not_a_buffer(self.path, exc) from None
            raise storage_failure(exc) or exc from None
        return conn

    def prepare(self, conn: Connection) -> None:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a batch whose offsets are committed in Kafka
            # survives a power loss too (NORMAL survives only a process crash).
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("BEGIN IMMEDIATE")  # one transaction: readers never see half a schema
            migrate(conn, self, MIGRATIONS, unversioned=1)
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, BufferFileError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError) and _is_not_a_database(exc):
                raise _not_a_buffer(self.path, exc) from None
            raise

    def begin_write(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the write lock up front: concurrent writers serialise cleanly

    def has_table(self, conn: Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def storage_failure(self, exc: BaseException) -> StorageUnavailable | None:
        return storage_failure(exc)


class SQLiteBufferStore(SQLBufferStore):
    """The buffer in one SQLite file (``BufferStore``)."""

    def __init__(
        self,
        path: Path,
        label_names: Sequence[str],
        dictionary: WordSentimentModel | None = None,
        holdout_share: float = 0.1,
        retention_days: float | None = None,
        synchronous: str = "FULL",
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.path = path
        super().__init__(SQLiteDialect(path, synchronous, lock_timeout_s), label_names, dictionary, holdout_share, retention_days)

    @classmethod
    def for_settings(cls, settings: Settings, dictionary: WordSentimentModel | None = None) -> SQLiteBufferStore:
        """The buffer under ``data_dir`` opened with the ``buffer.*`` settings (daemon and retrain worker alike)."""
        b = settings.buffer
        return cls(settings.db_path, settings.label_names, dictionary, holdout_share=b.holdout_share,
                   retention_days=b.retention_days, synchronous=b.synchronous, lock_timeout_s=b.lock_timeout_s)


class SQLiteBufferReader(SQLBufferReader):
    """A read-only view of a buffer file, while a daemon writes."""

    def __init__(self, path: Path, label_names: Sequence[str]) -> None:
        super().__init__(SQLiteDialect(path), label_names)
