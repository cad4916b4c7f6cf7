"""The buffer backends the contract suite (test_contract.py) runs against.

A backend here knows how to open a store and a reader on *one* shared buffer per test: reopening
and a second writer see the same data. Add a backend by adding a class and its name to BACKENDS.
PostgreSQL: the real server at 127.0.0.1:5432 (tests/postgres.py), one fresh schema per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentiloop.buffer import SQLiteBufferReader, SQLiteBufferStore
from sentiloop.buffer.sql_store import SQLBufferReader
from sentiloop.buffer.store import BufferReader, BufferStore
from sentiloop.config import Settings
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.postgres import PostgresSchema

LABELS = Settings().label_names


def dictionary(min_count: int = 1) -> WordSentimentModel:
    return WordSentimentModel([-2, -1, 0, 1, 2], min_count=min_count)


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, root: Path) -> None:
        self.path = root / "b.sqlite3"
        self.opened: list[SQLiteBufferStore] = []

    def open(self, *, with_dictionary: bool = True, labels: list[str] | None = None, min_count: int = 1, **kw: Any) -> BufferStore:
        store = SQLiteBufferStore(self.path, labels or LABELS, dictionary(min_count) if with_dictionary else None, **kw)
        self.opened.append(store)
        return store

    def reader(self) -> BufferReader:
        return SQLiteBufferReader(self.path, LABELS)

    def close(self) -> None:
        for store in self.opened:
            store.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, root: Path) -> None:
        self.schema = PostgresSchema.create()
        self.opened: list[BufferStore] = []

    def open(self, *, with_dictionary: bool = True, labels: list[str] | None = None, min_count: int = 1, **kw: Any) -> BufferStore:
        from sentiloop.buffer.postgres import PostgresBufferStore

        store = PostgresBufferStore(self.schema.dialect(), labels or LABELS, dictionary(min_count) if with_dictionary else None, **kw)
        self.opened.append(store)
        return store

    def reader(self) -> BufferReader:
        return SQLBufferReader(self.schema.dialect(), LABELS)

    def close(self) -> None:
        for store in self.opened:
            store.close()
        self.schema.drop()


Backend = SQLiteBackend | PostgresBackend
BACKENDS: dict[str, type[Backend]] = {"sqlite": SQLiteBackend, "postgresql": PostgresBackend}


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.postgres] if name == "postgresql" else []) for name in sorted(BACKENDS)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen = BACKENDS[request.param](tmp_path)
    yield chosen
    chosen.close()
