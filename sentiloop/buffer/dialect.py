"""The seam between the buffer's SQL and one database engine.

The event log and the dictionary rows are written once, in SQL both engines accept (``?``
placeholders, ``ON CONFLICT``, quoted ``"offset"``); a ``Dialect`` supplies what differs: how to
connect, how a write transaction starts (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``BEGIN`` plus
one advisory lock), the versioned migrations, and which errors mean "the storage is unavailable".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from sentiloop.errors import BufferFileError, StorageUnavailable


class Cursor(Protocol):
    """The DB-API cursor subset the buffer uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection in autocommit mode: transactions are opened and closed by explicit statements."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class Dialect(Protocol):
    """One engine: connections, write transactions, schema versions, error classification."""

    name: str
    location: str  # where the buffer lives, for messages: a path, or a URL without its password
    label_arrival: str  # the column that orders label events by arrival

    def connect(self, *, readonly: bool = False) -> Connection:
        """A new connection (the schema is not touched here: see ``prepare``)."""

    def prepare(self, conn: Connection) -> None:
        """Create or migrate the schema, in one transaction (several processes may start at once)."""

    def begin_write(self, conn: Connection) -> None:
        """Open a write transaction that serialises against every other writer of this buffer."""

    def has_table(self, conn: Connection, name: str) -> bool:
        """Whether ``name`` exists (a reader may look before the daemon created the schema)."""

    def storage_failure(self, exc: BaseException) -> StorageUnavailable | None:
        """The StorageUnavailable that ``exc`` amounts to, or None when it is about a record, not the store."""


def schema_version(conn: Connection, dialect: Dialect, unversioned: int) -> int:
    """The schema version recorded in ``meta``; ``unversioned`` when there is no such row."""
    if not dialect.has_table(conn, "meta"):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else unversioned


def migrate(conn: Connection, dialect: Dialect, migrations: Mapping[int, str], unversioned: int) -> None:
    """Run the migrations above the recorded version, in order (inside the caller's write transaction).

    A buffer written by a newer sentiloop is refused: its tables may mean something this one misreads.
    """
    newest = max(migrations)
    version = schema_version(conn, dialect, unversioned)
    if version > newest:
        raise BufferFileError(f"{dialect.location} has buffer schema {version}, newer than this sentiloop's {newest}: "
                              "upgrade sentiloop, or point the buffer elsewhere")
    for target in range(version + 1, newest + 1):
        for statement in migrations[target].split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (str(target),))
