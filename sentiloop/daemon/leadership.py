"""Which replica is the retrain leader: exactly one at a time, and leadership moves when it dies.

Replicas share one buffer; each ingests, but only the leader decides and runs retrains (the others
follow its champion: ``sentiloop.models.follow``). The lock lives where the replicas meet:

- PostgreSQL buffer: a *session* advisory lock on a connection held for as long as the replica
  leads. A killed process closes its socket and the server drops the lock at once; a host that
  vanishes is noticed by the session's TCP keepalives (``buffer.postgres.KEEPALIVE_S``) in ~25 s.
- SQLite buffer (replicas on one host, one data_dir): ``flock`` on ``data_dir/leader.lock``,
  released by the kernel when the process dies.

Every controller tick asks ``leads()``: a follower tries to take the lock, a leader checks it
still holds it (a lost connection means another replica may lead now: the caller must stop its
retrain at once).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from sentiloop.errors import StorageUnavailable

if TYPE_CHECKING:
    from sentiloop.buffer.postgres import PostgresConnection, PostgresDialect
    from sentiloop.config import Settings

log = logging.getLogger(__name__)


def replica_name() -> str:
    """How this replica shows up in logs, status and pg_stat_activity."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership(Protocol):
    """One lock among the replicas of one buffer."""

    def leads(self) -> bool:
        """True while this replica holds the leader lock (taking it if it is free)."""

    def release(self) -> None:
        """Give the lock up (at shutdown), so another replica leads without waiting."""


class FileLeadership:
    """``flock`` on a file beside the SQLite buffer: for replicas that share one data_dir on one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def leads(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for as long as this replica leads
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(replica_name() + "\n")
        handle.flush()
        self._file = handle
        log.info("this replica is the retrain leader (lock %s)", self.path)
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


class PostgresLeadership:
    """A session advisory lock on a session of its own to the buffer's database."""

    def __init__(self, dialect: PostgresDialect) -> None:
        from sentiloop.buffer.postgres import advisory_key

        self.dialect = dialect
        self.key = advisory_key(f"sentiloop leader {dialect.schema}")
        self._conn: PostgresConnection | None = None
        self._failure = ""

    def leads(self) -> bool:
        import psycopg

        try:
            if self._conn is not None:
                self._conn.execute("SELECT 1")  # still connected, so still holding the lock
                return True
            conn = self.dialect.connect(application=f"sentiloop leader {replica_name()}")
            if conn.execute("SELECT pg_try_advisory_lock(?)", (self.key,)).fetchone()[0]:
                self._conn = conn
                self._failure = ""
                log.info("this replica is the retrain leader (PostgreSQL advisory lock, schema %s)", self.dialect.schema)
                return True
            conn.close()
            return False
        except (psycopg.Error, StorageUnavailable) as exc:
            if self._conn is not None:
                log.error("lost the retrain leadership (its PostgreSQL connection failed: %s)", exc)
            elif str(exc) != self._failure:
                log.warning("cannot reach PostgreSQL to contend for the retrain leadership: %s", exc)
            self._failure = str(exc)
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # the server drops a session lock with its session
            except Exception:
                pass  # already broken: the server has dropped it
            self._conn = None


def leadership_for(settings: Settings) -> Leadership:
    """The lock the replicas of this buffer share."""
    if settings.buffer.url is None:
        return FileLeadership(settings.data_dir / "leader.lock")
    from sentiloop.buffer.postgres import dialect_for

    return PostgresLeadership(dialect_for(settings))
