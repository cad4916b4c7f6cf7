"""The feedback poll loop: validate → DLQ the bad → one buffer transaction → commit offsets.

Checkpoint order (what makes kill -9 safe), per poll batch:
  1. parse every record; refused ones are sent to ``<topic>.dlq`` with a reason header;
  2. valid events + dictionary updates + counters are written in ONE SQLite transaction;
  3. the DLQ producer is flushed (a refused record is never lost);
  4. offsets (last + 1 per partition) are committed to Kafka.
A crash between 2 and 4 only causes redelivery, which the buffer counts as duplicates.
The loop does no heavy work, so it keeps polling (and heartbeating) whatever else the daemon does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from sentiloop.buffer.sqlite import SQLiteBufferStore
from sentiloop.buffer.store import BatchResult, SourcedEvent
from sentiloop.config import Settings
from sentiloop.consumers.clients import ensure_topics, make_consumer, make_producer
from sentiloop.errors import InvalidEvent
from sentiloop.events import FeedbackEvent, parse_event
from sentiloop.monitoring.metrics import IngestMetrics

log = logging.getLogger(__name__)

REASON_HEADER = "sentiloop-reason"
DETAIL_HEADER = "sentiloop-detail"
SOURCE_HEADER = "sentiloop-source"
_STATUS_EVERY_S = 1.0


@dataclass
class LoopState:
    """What the health probes read: updated by the loop thread, read by the HTTP thread."""

    last_poll_monotonic: float = 0.0
    connected: bool = False
    assigned: int = 0
    batches: int = 0


class _RebalanceListener(ConsumerRebalanceListener):
    """Commit what leaves us; start what arrives at the group's committed offsets."""

    def __init__(self, loop: FeedbackConsumer) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.loop.commit_pending(only=set(revoked))
        for tp in revoked:  # a stale lag value would keep alerting for a partition we no longer own
            try:
                self.loop.metrics.consumer_lag.remove(str(tp.partition))
            except KeyError:
                pass

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        self.loop.to_resume.update(assigned)  # blocking calls are not allowed here: the poll thread does it


BatchListener = Callable[[BatchResult], None]


class FeedbackConsumer:
    """Consumes the feedback topic into the buffer; ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: Sequence[str],
        store: SQLiteBufferStore,
        metrics: IngestMetrics,
        on_batch: BatchListener | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.bootstrap = list(bootstrap)
        self.store = store
        self.metrics = metrics
        self.on_batch = on_batch
        self.state = LoopState()
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._last_status = 0.0
        self.to_resume: set[TopicPartition] = set()  # newly assigned: start at the committed offsets

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        topics = [self.kafka.topic, self.kafka.dlq_topic, self.kafka.models_topic]
        while not stop.is_set():  # Kafka may come up after us: wait (readiness says 503 meanwhile)
            try:
                ensure_topics(self.kafka, self.bootstrap, topics)
                break
            except KafkaError as exc:
                log.warning("Kafka at %s is not reachable yet (%s); retrying", ",".join(self.bootstrap), exc)
                stop.wait(2.0)
        if stop.is_set():
            return
        self._consumer = make_consumer(self.kafka, self.bootstrap)
        self._producer = make_producer(self.kafka, self.bootstrap)
        self._consumer.subscribe([self.kafka.topic], listener=_RebalanceListener(self))
        log.info("consuming %s as group %s from %s", self.kafka.topic, self.kafka.group_id, ",".join(self.bootstrap))
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def poll_once(self) -> int:
        """One poll → process → commit cycle; returns the number of records handled."""
        assert self._consumer is not None
        try:
            batch = self._consumer.poll(timeout_ms=self.kafka.poll_timeout_ms, max_records=self.kafka.max_poll_records)
        except KafkaError as exc:
            log.warning("poll failed (%s); the client reconnects by itself", exc)
            time.sleep(0.5)
            batch = {}
        self.state.last_poll_monotonic = time.monotonic()
        if self.to_resume:  # before processing: records fetched from a stale position are read again after the seek
            moved = self.resume_from_committed(self.to_resume)
            batch = {tp: records for tp, records in batch.items() if tp not in moved}
        handled = sum(len(records) for records in batch.values())
        if handled:
            self._process(batch)
        elif self._pending:
            self.commit_pending()
        self._refresh_status()
        return handled

    def close(self) -> None:
        """Commit what was stored, then leave the group so partitions move at once."""
        if self._producer is not None:
            self._producer.flush(timeout=10)
        if self._consumer is not None:
            self.commit_pending()
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=5)
        self._consumer = self._producer = None

    # -- the batch path ------------------------------------------------------------------------
    def _process(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        assert self._producer is not None
        valid: list[SourcedEvent] = []
        invalid: Counter[str] = Counter()
        record_ts: list[int] = []
        dlq_futures: list[FutureRecordMetadata | None] = []
        names = self.settings.label_names
        max_chars = self.settings.buffer.max_text_chars
        for tp, records in batch.items():
            for record in records:
                record_ts.append(record.timestamp)
                try:
                    event: FeedbackEvent = parse_event(record.value, names, record.timestamp, max_chars)
                except InvalidEvent as exc:
                    invalid[exc.reason] += 1
                    dlq_futures.append(self._send_to_dlq(record, exc))
                    continue
                valid.append(SourcedEvent(event, tp.topic, tp.partition, record.offset))
            self._pending[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)

        if not self._dlq_delivered(dlq_futures):
            self._rewind(batch)
            return
        result = self.store.append_batch(valid, invalid)  # one transaction: events + dictionary + counters
        committed = self.commit_pending()
        self._observe(result, invalid, record_ts, committed)
        if self.on_batch is not None:
            self.on_batch(result)

    def _send_to_dlq(self, record, error: InvalidEvent) -> FutureRecordMetadata | None:  # type: ignore[no-untyped-def]
        assert self._producer is not None
        headers = [
            (REASON_HEADER, error.reason.encode()),
            (DETAIL_HEADER, error.detail[:500].encode("utf-8", "replace")),
            (SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        log.debug("refused %s/%d/%d: %s", record.topic, record.partition, record.offset, error)
        try:
            return self._producer.send(self.kafka.dlq_topic, value=record.value or b"", key=record.key, headers=headers)
        except KafkaError as exc:
            log.warning("cannot publish to DLQ %s: %s", self.kafka.dlq_topic, exc)
            return None

    def _dlq_delivered(self, futures: list[FutureRecordMetadata | None]) -> bool:
        """Wait until every refused record is acknowledged by the broker (it must never be lost)."""
        if not futures:
            return True
        assert self._producer is not None
        try:
            self._producer.flush(timeout=30)
        except KafkaError as exc:
            log.warning("DLQ flush failed: %s", exc)
        if all(f is not None and f.succeeded() for f in futures):
            return True
        self.metrics.dlq_errors.inc()
        return False

    def _rewind(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        """Re-read this batch later: nothing of it is committed, so nothing is lost or skipped."""
        assert self._consumer is not None
        log.warning("DLQ not acknowledged; re-reading the batch in 1s")
        for tp, records in batch.items():
            self._pending.pop(tp, None)
            self._consumer.seek(tp, records[0].offset)
        time.sleep(1.0)

    def resume_from_committed(self, partitions: set[TopicPartition]) -> set[TopicPartition]:
        """Start each partition at the group's committed offset, not at a position this client remembers.

        After a reconnect kafka-python keeps its in-memory position for a partition it gets again; if
        the broker came back without its log (the in-memory development broker, a cluster restored
        from older state) that position silently skips the records below it. Committed offsets are
        where the buffer is durable; a partition with none starts per ``auto_offset_reset``. In normal
        operation this is a no-op (we commit on revoke), and re-reading is safe: duplicates are ignored.
        Returns the partitions it moved.
        """
        assert self._consumer is not None
        moved: set[TopicPartition] = set()
        for tp in list(partitions):
            try:
                committed = self._consumer.committed(tp, timeout_ms=5000)
            except KafkaError as exc:
                log.warning("no committed offset for %s yet (%s); trying again after the next poll", tp, exc)
                continue
            self.to_resume.discard(tp)
            if tp not in self._consumer.assignment():
                continue
            self._pending.pop(tp, None)
            moved.add(tp)
            if committed is not None:
                self._consumer.seek(tp, committed)
            elif self.kafka.auto_offset_reset == "earliest":
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek_to_end(tp)
        return moved

    def commit_pending(self, only: set[TopicPartition] | None = None) -> bool:
        """Commit stored-but-uncommitted offsets; a failure keeps them for the next attempt."""
        if self._consumer is None or not self._pending:
            return True
        offsets = {tp: om for tp, om in self._pending.items() if only is None or tp in only}
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as exc:
            self.metrics.commit_errors.inc()
            log.warning("offset commit failed (%s); stored events will be redelivered and counted as duplicates", exc)
            if only is not None:  # partitions are leaving us: the new owner re-reads from the last commit
                for tp in offsets:
                    self._pending.pop(tp, None)
            return False
        for tp, om in offsets.items():
            if self._pending.get(tp) == om:
                del self._pending[tp]
        return True

    # -- observability -------------------------------------------------------------------------
    def _observe(self, result: BatchResult, invalid: Counter[str], record_ts: list[int], committed: bool) -> None:
        m = self.metrics
        m.events_consumed.inc(len(record_ts))
        m.events_stored.inc(len(result.inserted))
        m.events_duplicate.inc(result.duplicates)
        m.dictionary_updates.inc(result.dictionary_updates)
        for reason, count in invalid.items():
            m.events_invalid.labels(reason=reason).inc(count)
        if committed:
            now_ms = time.time() * 1000
            for ts in record_ts:
                m.ingest_latency.observe(max(0.0, (now_ms - ts) / 1000))
        self.state.batches += 1

    def _refresh_status(self) -> None:
        """Lag, connection and dictionary gauges, at most once a second (metrics() is not free)."""
        now = time.monotonic()
        if now - self._last_status < _STATUS_EVERY_S or self._consumer is None:
            return
        self._last_status = now
        consumer = self._consumer
        connections = consumer.metrics().get("consumer-metrics", {}).get("connection-count", 0)
        self.state.connected = bool(connections)
        self.metrics.kafka_connected.set(1 if self.state.connected else 0)
        assignment = consumer.assignment()
        self.state.assigned = len(assignment)
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if position is not None:
                self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(max(0, highwater - position))
        if self.store.dictionary is not None:
            self.metrics.dictionary_words.set(len(self.store.dictionary.words))
