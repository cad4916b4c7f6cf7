"""PostgreSQL: one buffer shared by daemon replicas on several hosts (``buffer.url: postgresql://…``).

Same guarantees as SQLite, same SQL (event_log.py, dictionary_rows.py): one transaction per poll
batch holds the events, the labels, the dictionary rows and the counters; ``event_id`` is unique.

Deadlock-freedom: every write transaction first takes ONE transaction-level advisory lock (keyed by
the schema), before it reads or writes any row, and holds no other lock while waiting for it. So
writers run one at a time — replicas updating the same words, housekeeping, the retrain leader's
marks — and no cycle of waits can form: the only lock ever waited for is that one. It also keeps the
dictionary exact: the rows of the words a batch changes are re-read under the lock, and the label
positions (``label_seq``) follow commit order. The price is that writes do not run in parallel
(README: scaling), which on a poll-batch-per-transaction design costs little.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from sentiloop.buffer.dialect import Connection, Cursor, migrate
from sentiloop.buffer.schema import POSTGRES, migrations
from sentiloop.buffer.sql_store import SQLBufferStore
from sentiloop.errors import NotInitialised, StorageUnavailable
from sentiloop.models.word_sentiment import WordSentimentModel

if TYPE_CHECKING:
    from sentiloop.config import Settings

MIGRATIONS = migrations(POSTGRES)  # the same versions as the SQLite buffer's (buffer/schema.py)
SCHEMA_VERSION = max(MIGRATIONS)
KEEPALIVE_S = 10


def redacted(url: str) -> str:
    """``url`` with any password replaced, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name`` (the same on every host)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


@lru_cache(maxsize=256)
def _placeholders(statement: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (the shared SQL has no other ``?`` or ``%``)."""
    return statement.replace("?", "%s")


class PostgresConnection:
    """A psycopg connection in autocommit mode, speaking the ``Connection`` protocol."""

    def __init__(self, raw: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.raw = raw

    def execute(self, statement: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self.raw.execute(_placeholders(statement), parameters or None)

    def executemany(self, statement: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(_placeholders(statement), parameters)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


# SQLSTATE classes and codes that mean "the storage cannot take writes now", by metric label; any
# other psycopg error (a value PostgreSQL refuses, e.g. a NUL character) is about one record.
_UNAVAILABLE_STATES = {"53100": "disk_full", "25006": "read_only", "55P03": "locked", "55006": "locked",
                       "57P01": "connection_lost", "57P02": "connection_lost"}  # terminated by an admin or a crash
_UNAVAILABLE_CLASSES = {"08": "connection_lost", "40": "locked", "53": "server_unavailable", "57": "server_unavailable",
                        "58": "io_error", "XX": "corrupt"}


def storage_failure(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` amounts to, or None when it is about a record.

    A lost or refused connection, a full disk, a server shutting down, a lock wait past
    ``buffer.lock_timeout_s`` or a serialisation failure all pause ingestion and retry.
    """
    if isinstance(exc, StorageUnavailable):
        return exc
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    kind = _UNAVAILABLE_STATES.get(state) or _UNAVAILABLE_CLASSES.get(state[:2])
    if kind is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        kind = "connection_lost" if not state else "postgres_error"
    if kind is None:
        return None
    return StorageUnavailable(kind, f"PostgreSQL: {str(exc).strip()} (SQLSTATE {state or 'none'})")


class PostgresDialect:
    """One schema of one PostgreSQL database; writers serialise on one advisory lock (module doc)."""

    name = "postgresql"
    label_arrival = "arrival"

    def __init__(self, url: str, schema: str = "sentiloop", password: str | None = None, lock_timeout_s: float = 10.0,
                 connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.schema = schema
        self.password = password
        self.lock_timeout_s = lock_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.location = f"{redacted(url)} (schema {schema})"
        self.lock_key = advisory_key(f"sentiloop buffer {schema}")

    def connect(self, *, readonly: bool = False, application: str | None = None) -> PostgresConnection:
        """A new session; TCP keepalives both ways, so a vanished peer is noticed in ~KEEPALIVE_S × 2.5
        (the server then ends the session and drops its locks; this side gets an error, not a hang)."""
        extra: dict[str, Any] = {"password": self.password} if self.password else {}
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)),
                                  application_name=(application or f"sentiloop {self.schema}")[:63], keepalives=1,
                                  keepalives_idle=KEEPALIVE_S, keepalives_interval=KEEPALIVE_S // 2, keepalives_count=3,
                                  options=f"-c tcp_keepalives_idle={KEEPALIVE_S} -c tcp_keepalives_interval={KEEPALIVE_S // 2}"
                                          " -c tcp_keepalives_count=3", **extra)
        except psycopg.Error as exc:
            raise storage_failure(exc) or exc from None
        conn = PostgresConnection(raw)
        try:
            conn.execute(f"SET lock_timeout = {int(self.lock_timeout_s * 1000)}")
            raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
                if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.schema,)).fetchone() is None:
                    raise NotInitialised(f"no buffer in {self.location}: start the daemon (`sentiloop run`) with this "
                                         "buffer.url first")
        except BaseException:
            conn.close()
            raise
        return conn

    def prepare(self, conn: Connection) -> None:
        """Schema and migrations under the writers' lock: replicas starting together migrate once."""
        assert isinstance(conn, PostgresConnection)
        try:
            self.begin_write(conn)
            conn.raw.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            migrate(conn, self, MIGRATIONS, unversioned=0)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def begin_write(self, conn: Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (self.lock_key,))

    def has_table(self, conn: Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                           (self.schema, name)).fetchone()
        return row is not None

    def storage_failure(self, exc: BaseException) -> StorageUnavailable | None:
        return storage_failure(exc)


class PostgresBufferStore(SQLBufferStore):
    """The buffer in a PostgreSQL schema (``BufferStore``), shared by replicas."""

    @classmethod
    def for_settings(cls, settings: Settings, dictionary: WordSentimentModel | None = None) -> PostgresBufferStore:
        return cls(dialect_for(settings), settings.label_names, dictionary, holdout_share=settings.buffer.holdout_share,
                   retention_days=settings.buffer.retention_days)


def dialect_for(settings: Settings) -> PostgresDialect:
    b = settings.buffer
    assert b.url is not None
    return PostgresDialect(b.url, b.postgres_schema, b.password.get_secret_value() if b.password else None, b.lock_timeout_s)
