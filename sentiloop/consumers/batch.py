"""One poll batch on its way to durability, and the parse step that builds it.

A :class:`PendingBatch` holds exactly what is *not yet durable* of one poll batch: refused records
still to be acknowledged by the DLQ, valid events still to be stored, refusal counts still to be
written. Each step removes what it made durable, so a batch retried after a failure (the buffer
was full, the DLQ broker away) continues where it stopped and nothing is done twice. Its offsets
become committable only when the batch is empty.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition

from sentiloop.buffer.store import BatchResult, SourcedEvent
from sentiloop.errors import InvalidEvent
from sentiloop.events import parse_event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Refused:
    """A record bound for the DLQ, with the reason header it will carry."""

    record: Any  # kafka.consumer.fetcher.ConsumerRecord
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class RecordCopy:
    """A record rebuilt from the buffer (an expired label event), shaped like a ConsumerRecord for the DLQ."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Valid:
    """A validated event and the record it came from (needed if storing it fails: it then goes to the DLQ)."""

    record: Any
    event: SourcedEvent


@dataclass
class PendingBatch:
    valid: list[Valid] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)  # refusals not yet counted in the buffer
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    record_ts: list[int] = field(default_factory=list)
    done: BatchResult = field(default_factory=BatchResult)  # what was stored so far
    counted: Counter[str] = field(default_factory=Counter)  # refusals already counted in the buffer

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self.next_offsets)

    @property
    def size(self) -> int:
        return len(self.record_ts)

    def refuse(self, record: Any, reason: str, detail: str) -> None:
        self.refused.append(Refused(record, reason, detail))
        self.invalid[reason] += 1

    def stored(self, result: BatchResult, with_counts: bool) -> None:
        """Record a committed buffer transaction (``with_counts``: it also wrote the pending refusal counts)."""
        self.done.add(result)
        if with_counts:
            self.counted.update(self.invalid)
            self.invalid = Counter()


def prepare_batch(batch: dict[TopicPartition, list[Any]], label_names: list[str], max_text_chars: int,
                  max_record_bytes: int) -> PendingBatch:
    """Parse every record: valid ones become events, every failure — whatever it raises — a refusal."""
    pending = PendingBatch()
    for tp, records in batch.items():
        for record in records:
            pending.record_ts.append(record.timestamp)
            try:
                event = parse_event(record.value, label_names, record.timestamp, max_text_chars, max_record_bytes)
            except InvalidEvent as exc:
                pending.refuse(record, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a parser bug must not stop the partition: DLQ it, say so loudly
                log.exception("validating %s/%d/%d raised; sending it to the DLQ", tp.topic, tp.partition, record.offset)
                pending.refuse(record, "internal_error", f"{type(exc).__name__}: {exc}")
                continue
            pending.valid.append(Valid(record, SourcedEvent(event, tp.topic, tp.partition, record.offset)))
        pending.next_offsets[tp] = records[-1].offset + 1
    return pending
