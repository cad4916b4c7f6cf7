"""The buffer backends the contract suite (test_contract.py) runs against.

A backend here knows how to open a store and a reader on *one* shared buffer per test: reopening
and a second writer see the same data. Add a backend by adding a class and its name to BACKENDS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentiloop.buffer import SQLiteBufferReader, SQLiteBufferStore
from sentiloop.buffer.store import BufferReader, BufferStore
from sentiloop.config import Settings
from sentiloop.models.word_sentiment import WordSentimentModel

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


BACKENDS = {"sqlite": SQLiteBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteBackend]:
    chosen = BACKENDS[request.param](tmp_path)
    yield chosen
    chosen.close()
