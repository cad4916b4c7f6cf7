"""The durable refinement buffer: every valid feedback event, stored once, read by retrains.

``open_buffer`` and ``open_reader`` are where a backend is chosen; everything else types against
the ``BufferStore`` / ``BufferReader`` protocols.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentiloop.buffer.sql_store import SQLBufferReader
from sentiloop.buffer.sqlite import SQLiteBufferReader, SQLiteBufferStore
from sentiloop.buffer.store import BatchResult, BufferReader, BufferStats, BufferStore, SourcedEvent, StoredEvent

if TYPE_CHECKING:
    from sentiloop.config import Settings
    from sentiloop.models.word_sentiment import WordSentimentModel


def open_buffer(settings: Settings, dictionary: WordSentimentModel | None = None) -> BufferStore:
    """The buffer of ``settings`` opened for writing (created and migrated if needed)."""
    if settings.buffer.url is not None:
        from sentiloop.buffer.postgres import PostgresBufferStore  # psycopg: only when configured

        return PostgresBufferStore.for_settings(settings, dictionary)
    return SQLiteBufferStore.for_settings(settings, dictionary)


def open_reader(settings: Settings) -> BufferReader:
    """The buffer of ``settings`` read-only (`sentiloop status`, `sentiloop dictionary`)."""
    if settings.buffer.url is not None:
        from sentiloop.buffer.postgres import dialect_for

        return SQLBufferReader(dialect_for(settings), settings.label_names)
    return SQLiteBufferReader(settings.db_path, settings.label_names)


__all__ = [
    "BatchResult",
    "BufferReader",
    "BufferStats",
    "BufferStore",
    "SQLiteBufferReader",
    "SQLiteBufferStore",
    "SourcedEvent",
    "StoredEvent",
    "open_buffer",
    "open_reader",
]
