"""The real PostgreSQL server the tests use (127.0.0.1:5432 on this machine and in CI), one schema per test.

SENTILOOP_TEST_POSTGRES_URL points elsewhere. A server that does not answer fails the test with what
to do (start it, or deselect with ``-m "not postgres"``): a skipped backend would look like a pass.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sentiloop.buffer.postgres import PostgresDialect

URL = os.environ.get("SENTILOOP_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
START_HINT = ("start it (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`), set "
              "SENTILOOP_TEST_POSTGRES_URL, or deselect these tests with -m 'not postgres'")


@dataclass(frozen=True)
class PostgresSchema:
    """A fresh schema on the test server, dropped (with everything in it) at the end of the test."""

    url: str
    name: str

    @classmethod
    def create(cls) -> PostgresSchema:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        try:
            with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"CREATE SCHEMA {name}")
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL at {URL} does not answer ({exc}): {START_HINT}")
        return cls(URL, name)

    def dialect(self, **kw: float) -> PostgresDialect:
        from sentiloop.buffer.postgres import PostgresDialect

        return PostgresDialect(self.url, self.name, **kw)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
