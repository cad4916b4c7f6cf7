"""The durable refinement buffer: every valid feedback event, stored once, read by retrains."""

from sentiloop.buffer.sqlite import SQLiteBufferStore, open_readonly
from sentiloop.buffer.store import BatchResult, BufferStats, BufferStore, SourcedEvent, StoredEvent

__all__ = [
    "BatchResult",
    "BufferStats",
    "BufferStore",
    "SQLiteBufferStore",
    "SourcedEvent",
    "StoredEvent",
    "open_readonly",
]
