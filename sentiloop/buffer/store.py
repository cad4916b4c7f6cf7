"""The BufferStore seam: what the consumer and the retrainers need from durable storage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from sentiloop.events import FeedbackEvent, LabelEvent, ParsedRecord
from sentiloop.models.word_sentiment import PendingWord, WordEntry, WordSentimentModel

if TYPE_CHECKING:
    from sentiloop.config import DictionaryConfig


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """A validated event or label event plus where it came from (for audit and for replaying a partition)."""

    event: ParsedRecord
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back from the buffer.

    ``seq`` increases with insertion order; ``label_seq`` with the moment its current label arrived
    (None while it awaits one): a label that matures late gives an old event a new ``label_seq``, so
    the volume trigger and the retrain windows, which read by ``label_seq``, see it then.
    """

    seq: int
    event: FeedbackEvent
    split: str
    ingested_ms: int
    label_seq: int | None = None


@dataclass(frozen=True, slots=True)
class PendingLabel:
    """A label event waiting for its event, with where it came from (for the DLQ when it expires)."""

    label: LabelEvent
    received_ms: int
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class BatchResult:
    """What one ``append_batch`` did.

    ``inserted``: events newly stored; ``labelled``: events that got a label in this batch (new labelled
    events, and stored events whose delayed label or correction was applied), with that label;
    ``label_delays_ms``: for each delayed label applied, the label's ts minus the event's ts.
    """

    inserted: list[FeedbackEvent] = field(default_factory=list)
    duplicates: int = 0
    dictionary_updates: int = 0
    labelled: list[FeedbackEvent] = field(default_factory=list)
    labels_applied: int = 0
    labels_pending: int = 0
    corrections: int = 0
    label_delays_ms: list[int] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        """Fold in another transaction's result (a batch stored in parts)."""
        self.inserted.extend(other.inserted)
        self.labelled.extend(other.labelled)
        self.label_delays_ms.extend(other.label_delays_ms)
        self.duplicates += other.duplicates
        self.dictionary_updates += other.dictionary_updates
        self.labels_applied += other.labels_applied
        self.labels_pending += other.labels_pending
        self.corrections += other.corrections


@dataclass(slots=True)
class BufferStats:
    """Counts for ``sentiloop status`` and the gauges."""

    events_stored: int
    events_labelled: int
    events_invalid: dict[str, int]
    events_duplicate: int
    per_label: dict[str, int]
    per_domain: dict[str, int]
    dictionary_words: int
    dictionary_pending: int
    dictionary_updates: int
    events_awaiting_label: int = 0
    labels_pending: int = 0
    labels_expired: int = 0
    label_corrections: int = 0


def status_document(stats: BufferStats, data_dir: str) -> dict[str, Any]:
    """The JSON of `sentiloop status --json` (offline) and the counts part of GET /v1/status."""
    document: dict[str, Any] = asdict(stats)
    document.update(events_invalid_total=sum(stats.events_invalid.values()), data_dir=data_dir)
    return document


def holdout_split(event_id: str, holdout_share: float) -> str:
    """Deterministic train/holdout assignment by event_id, so a redelivery lands in the same split."""
    bucket = int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=4).digest(), "big") % 10_000
    return "holdout" if bucket < holdout_share * 10_000 else "train"


class BufferStore(Protocol):
    """Durable, idempotent event storage with the dictionary's state. One ``append_batch`` = one transaction.

    Every caller (consumer, controller, retrain worker, housekeeping) types against this protocol;
    ``SQLiteBufferStore`` implements it today.
    """

    dictionary: WordSentimentModel | None  # the in-memory cache of the dictionary rows (None: no dictionary kept)

    def append_batch(self, records: Sequence[SourcedEvent], invalid: Mapping[str, int] | None = None) -> BatchResult:
        """Store new events and label events (duplicates by event_id are counted, not stored), apply the
        labels whose events are stored, update the dictionary, count invalid records."""

    def count_since(self, mark: str) -> int:
        """Labels that matured after ``mark`` was last set (the volume trigger's input)."""

    def count_after(self, label_seq: int) -> int:
        """Labels that matured after position ``label_seq``."""

    def mark_seq(self, mark: str) -> int:
        """The label position ``mark`` was last set to (0 when never)."""

    def set_mark(self, mark: str, label_seq: int | None = None) -> None:
        """Remember a label position (default: the newest) under ``mark``."""

    def label_position(self) -> int:
        """The newest label position (marks and retrain windows are in these units)."""

    def label_counts(self) -> tuple[int, int]:
        """(stored events awaiting a label, label events awaiting their event)."""

    def pending_labels_older_than(self, received_before_ms: int, limit: int = 1000) -> list[PendingLabel]:
        """Label events still waiting for their event, received before ``received_before_ms``."""

    def expire_labels(self, label_ids: Sequence[str]) -> int:
        """Mark pending labels expired (after the DLQ acknowledged them); returns how many were still pending."""

    def sample(
        self, n: int, *, label: int | None = None, domain: str | None = None, split: str | None = None, seed: int = 0
    ) -> list[StoredEvent]:
        """Up to ``n`` events chosen uniformly (reproducibly for a seed), optionally filtered."""

    def iter_events(self) -> Iterator[StoredEvent]:
        """Every event, in insertion order."""

    def iter_labelled(self, *, since: int = 0, until: int | None = None, split: str | None = None) -> Iterator[StoredEvent]:
        """Labelled events whose label matured in (``since``, ``until``], in that order (by ``label_seq``)."""

    def export_jsonl(self, out: IO[str], *, labelled_only: bool = False) -> int:
        """Write events as schema-v1 JSON lines; returns how many."""

    def stats(self) -> BufferStats:
        """Current counts."""

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete events past the retention age (their ids are kept so they stay duplicates)."""

    def apply(self, dictionary: DictionaryConfig, retention_days: float | None) -> None:
        """A reloaded config: the dictionary's update rule and the retention age, from the next batch on."""

    def seed_dictionary(self, lexicon: Mapping[str, float], source: str) -> int:
        """Bootstrap words from a seed lexicon once per buffer; returns how many were added."""

    def committed_dictionary(self) -> WordSentimentModel:
        """The dictionary as committed (what a snapshot may show)."""

    def close(self) -> None:
        """Release the connection."""


class BufferReader(Protocol):
    """Read-only access for `sentiloop status` and `sentiloop dictionary`, safe while a daemon writes."""

    def stats(self) -> BufferStats:
        """Current counts."""

    def word(self, word: str) -> tuple[WordEntry | None, PendingWord | None]:
        """A word's dictionary row, or its pending count (both None: never seen)."""

    def words(self) -> dict[str, WordEntry]:
        """Every known word, sorted."""

    def close(self) -> None:
        """Release the connection."""
