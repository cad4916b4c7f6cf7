"""The feedback poll loop: validate → DLQ the bad → one buffer transaction → commit offsets.

Checkpoint order (what makes kill -9, a full disk and a poison record safe), per poll batch:
  1. parse every record; any failure — an ``InvalidEvent`` or anything else the parser raises —
     makes it a refused record with a reason (``internal_error`` for the unexpected);
  2. refused records are published to ``<topic>.dlq`` and the producer is flushed: each must be
     acknowledged (a refused record is never lost);
  3. valid events + dictionary updates + refusal counters are written in ONE SQLite transaction.
     If that transaction fails because of a record (a value SQLite cannot bind), the events are
     stored one transaction each and those that still fail are refused as ``unstorable`` (→ step 2);
  4. only now do the batch's offsets (last + 1 per partition) become committable; they are committed.

Label events whose event never arrives wait in the buffer for ``buffer.label_wait_s``; then, between
batches, they are published to the DLQ (reason ``label_for_unknown_event``) and, once acknowledged,
marked expired in the buffer: a crash in between publishes them again (the DLQ may see one twice; it
never misses one).

If step 2 or 3 cannot be completed (the buffer is full, read-only or locked; the DLQ is away), the
batch is **held** in memory with exactly what is not yet durable, every assigned partition is paused
(the consumer keeps polling, so it stays in the group), readiness reports the outage, and the
held batch is retried with capped exponential backoff until it succeeds; then fetching resumes.
No offset past the last stored batch is ever committed: a crash at any point only causes
redelivery, which the buffer counts as duplicates. A held batch whose partitions are revoked is
dropped (the new owner reads it again from the committed offsets).
The loop does no heavy work, so it keeps polling (and heartbeating) whatever else the daemon does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from sentiloop.buffer.store import BatchResult, BufferStore
from sentiloop.config import Settings
from sentiloop.consumers.batch import PendingBatch, RecordCopy, Refused, prepare_batch
from sentiloop.consumers.clients import KafkaClients
from sentiloop.consumers.outage import Outage
from sentiloop.errors import DLQUnavailable, StorageUnavailable
from sentiloop.monitoring.metrics import IngestMetrics

log = logging.getLogger(__name__)

REASON_HEADER = "sentiloop-reason"
DETAIL_HEADER = "sentiloop-detail"
SOURCE_HEADER = "sentiloop-source"
_STATUS_EVERY_S = 1.0
_EXPIRY_EVERY_S = 30.0


@dataclass
class LoopState:
    """What the health probes read: updated by the loop thread, read by the HTTP thread."""

    last_poll_monotonic: float = 0.0
    connected: bool = False
    assigned: int = 0
    batches: int = 0
    outage: dict[str, object] | None = None  # set while ingestion is paused by a failure
    stalled: dict[int, dict[str, object]] = field(default_factory=dict)  # partition → why it does not move
    last_poll_error: str | None = None
    last_poll_error_at: float = 0.0


class _RebalanceListener(ConsumerRebalanceListener):
    """Commit what leaves us; start what arrives at the group's committed offsets."""

    def __init__(self, loop: FeedbackConsumer) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.loop.commit_pending(only=set(revoked))
        self.loop.drop_held(set(revoked))
        for tp in revoked:  # a stale lag value would keep alerting for a partition we no longer own
            self.loop.state.stalled.pop(tp.partition, None)
            self.loop.progress_by_partition.pop(tp, None)
            for gauge in (self.loop.metrics.consumer_lag, self.loop.metrics.partition_stalled):
                try:
                    gauge.remove(str(tp.partition))
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
        store: BufferStore,
        metrics: IngestMetrics,
        on_batch: BatchListener | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.bootstrap = list(bootstrap)
        self.store = store
        self.metrics = metrics
        self.on_batch = on_batch
        self.clients = clients or KafkaClients(settings.kafka, bootstrap)
        self.state = LoopState()
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}  # stored, not yet committed
        self._held: PendingBatch | None = None  # a batch that could not be made durable yet
        self._outage: Outage | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._last_status = 0.0
        self._last_expiry = 0.0
        self.progress_by_partition: dict[TopicPartition, tuple[int, float, float]] = {}  # position, moved at, waiting since
        self.operator_paused = settings.pause.ingestion  # POST /v1/pause or pause.ingestion in the config
        self.to_resume: set[TopicPartition] = set()  # newly assigned: start at the committed offsets

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        topics = [self.kafka.topic, self.kafka.dlq_topic, self.kafka.models_topic]
        while not stop.is_set():  # Kafka may come up after us: wait (readiness says 503 meanwhile)
            try:
                self.clients.ensure_topics(topics)
                break
            except KafkaError as exc:
                log.warning("Kafka at %s is not reachable yet (%s); retrying", ",".join(self.bootstrap), exc)
                stop.wait(2.0)
        if stop.is_set():
            return
        self._consumer = self.clients.consumer()
        self._producer = self.clients.producer()
        self._consumer.subscribe([self.kafka.topic], listener=_RebalanceListener(self))
        log.info("consuming %s as group %s from %s", self.kafka.topic, self.kafka.group_id, ",".join(self.bootstrap))
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                except Exception:  # the loop outlives any one failure; a batch in flight is held or re-read
                    log.exception("poll loop iteration failed; continuing in 1s")
                    stop.wait(1.0)
        finally:
            self.close()

    def poll_once(self) -> int:
        """One poll → process → commit cycle; returns the number of records handled."""
        consumer = self._consumer
        assert consumer is not None
        if self._held is not None and self._outage is not None and self._outage.retry_due():
            self._finish(self._held)  # partitions resume at the next poll_once unless something else pauses them
        outage = self._outage is not None and (self._held is not None or not self._outage.retry_due())
        paused = outage or self.operator_paused
        self.metrics.ingest_paused.labels(cause="operator").set(1 if self.operator_paused else 0)
        if paused:
            consumer.pause(*consumer.assignment())  # also partitions assigned during the outage
        elif consumer.paused():
            consumer.resume(*consumer.paused())
        try:
            batch = consumer.poll(timeout_ms=self.kafka.poll_timeout_ms, max_records=self.kafka.max_poll_records)
        except KafkaError as exc:  # counted and kept for the probes (a client stuck inside poll() is seen from outside)
            self.metrics.poll_errors.labels(error=type(exc).__name__).inc()
            self.state.last_poll_error = f"{type(exc).__name__}: {exc}"[:300]
            self.state.last_poll_error_at = time.monotonic()
            log.warning("poll failed (%s); the client reconnects by itself", exc)
            time.sleep(0.5)
            batch = {}
        self.state.last_poll_monotonic = time.monotonic()
        prepared: PendingBatch | None = None
        try:  # until _finish owns the records, any failure sends them back to Kafka to be read again
            if self.to_resume:  # before processing: records fetched from a stale position are read again after the seek
                moved = self.resume_from_committed(self.to_resume)
                batch = {tp: records for tp, records in batch.items() if tp not in moved}
            if paused:
                self._push_back(batch)  # paused partitions return nothing; anything else is read again later
                batch = {}
            if batch:
                buffer = self.settings.buffer
                prepared = prepare_batch(batch, self.settings.label_names, buffer.max_text_chars, buffer.max_record_bytes)
        except BaseException:
            self._push_back(batch)
            raise
        handled = prepared.size if prepared is not None else 0
        if prepared is not None:
            self._finish(prepared)
        elif self._pending:
            self.commit_pending()
        elif self._outage is not None and self._held is None and not outage:
            self._recovered()  # the held batch went back to Kafka (revoked) and nothing failed since
        if self._outage is None:
            self._expire_labels()
        self._refresh_status()
        return handled

    def close(self) -> None:
        """Commit what was stored, then leave the group so partitions move at once."""
        if self._held is not None:
            log.warning("stopping with a batch of %d records not yet stored (%s); it is read again at the next start",
                        self._held.size, self._outage.detail if self._outage else "unknown")
        if self._producer is not None:
            self._producer.flush(timeout=10)
        if self._consumer is not None:
            self.commit_pending()
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=5)
        self._consumer = self._producer = None

    # -- the batch path ------------------------------------------------------------------------
    def _finish(self, batch: PendingBatch) -> None:
        """Make ``batch`` durable and commit it, or hold it and pause; never raises."""
        try:
            self._deliver_refused(batch)
            self._store(batch)
        except StorageUnavailable as exc:
            self.metrics.buffer_write_errors.labels(kind=exc.kind).inc()
            self._hold(batch, "buffer", exc.kind, exc.detail)
            return
        except DLQUnavailable as exc:
            self._hold(batch, "dlq", "not_acknowledged", str(exc))
            return
        except Exception as exc:  # a bug: keep the batch, say so loudly, retry with backoff
            log.exception("storing a batch failed unexpectedly")
            self._hold(batch, "internal", "internal", f"{type(exc).__name__}: {exc}")
            return
        self._held = None
        for tp, offset in batch.next_offsets.items():
            self._pending[tp] = OffsetAndMetadata(offset, "", -1)
        committed = self.commit_pending()
        if self._outage is not None:
            self._recovered()
        self._observe(batch.done, batch.counted, batch.record_ts, committed)
        if self.on_batch is not None:
            try:
                self.on_batch(batch.done)
            except Exception:  # housekeeping (snapshots, drift offers) never stops ingestion
                log.exception("after-batch hook failed")

    def _store(self, batch: PendingBatch) -> None:
        """Step 3: one transaction; on a record-level failure, isolate the record(s) that cause it."""
        if not batch.valid and not batch.invalid:
            return
        try:
            result = self.store.append_batch([v.event for v in batch.valid], batch.invalid)
        except StorageUnavailable:
            raise
        except Exception as exc:
            log.warning("a batch of %d events failed to store (%s: %s); storing them one by one to find the cause",
                        len(batch.valid), type(exc).__name__, exc)
            self._store_one_by_one(batch)
            self._deliver_refused(batch)  # the unstorable ones, before their offsets can be committed
            result = self.store.append_batch([], batch.invalid)
        batch.valid = []
        batch.stored(result, with_counts=True)

    def _store_one_by_one(self, batch: PendingBatch) -> None:
        while batch.valid:
            item = batch.valid[0]
            try:
                result = self.store.append_batch([item.event])
            except StorageUnavailable:
                raise
            except Exception as exc:
                log.warning("event %r from %s/%d/%d cannot be stored (%s: %s); sending it to the DLQ", item.event.event.event_id[:40],
                            item.event.topic, item.event.partition, item.event.offset, type(exc).__name__, exc)
                batch.refuse(item.record, "unstorable", f"{type(exc).__name__}: {exc}")
            else:
                batch.stored(result, with_counts=False)
            batch.valid.pop(0)

    def _deliver_refused(self, batch: PendingBatch) -> None:
        """Step 2: every refused record acknowledged by the DLQ, or DLQUnavailable (the rest stays in the batch)."""
        if not batch.refused:
            return
        assert self._producer is not None
        sent = [(refused, self._send_to_dlq(refused)) for refused in batch.refused]
        try:
            self._producer.flush(timeout=30)
        except KafkaError as exc:
            log.warning("DLQ flush failed: %s", exc)
        batch.refused = [refused for refused, future in sent if future is None or not future.succeeded()]
        if batch.refused:
            self.metrics.dlq_errors.inc()
            raise DLQUnavailable(f"{len(batch.refused)} refused record(s) not acknowledged by {self.kafka.dlq_topic}")

    def _send_to_dlq(self, refused: Refused) -> FutureRecordMetadata | None:
        assert self._producer is not None
        record = refused.record
        headers = [
            (REASON_HEADER, refused.reason.encode()),
            (DETAIL_HEADER, refused.detail[:500].encode("utf-8", "replace")),
            (SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        log.debug("refused %s/%d/%d: %s: %s", record.topic, record.partition, record.offset, refused.reason, refused.detail)
        try:
            return self._producer.send(self.kafka.dlq_topic, value=record.value or b"", key=record.key, headers=headers)
        except KafkaError as exc:
            log.warning("cannot publish to DLQ %s: %s", self.kafka.dlq_topic, exc)
            return None

    def _expire_labels(self) -> None:
        """Label events that waited ``buffer.label_wait_s`` for their event: to the DLQ, then marked expired
        (and the label gauges refreshed), at most every ``_EXPIRY_EVERY_S``."""
        wait_s = self.settings.buffer.label_wait_s
        now = time.monotonic()
        if now - self._last_expiry < min(_EXPIRY_EVERY_S, max(0.5, wait_s / 4)):
            return
        self._last_expiry = now
        try:  # the label gauges ride on this cadence: counting unlabelled events every second would cost the poll loop
            awaiting, pending = self.store.label_counts()
            expired = self.store.pending_labels_older_than(int(time.time() * 1000 - wait_s * 1000))
        except StorageUnavailable:
            return  # the next batch reports the outage
        self.metrics.events_awaiting_label.set(awaiting)
        self.metrics.labels_pending.set(pending)
        if not expired:
            return
        names = self.settings.label_names
        batch = PendingBatch(refused=[
            Refused(RecordCopy(p.topic, p.partition, p.offset, p.label.ref_event_id.encode("utf-8"),
                               json.dumps(p.label.to_json(names), ensure_ascii=False).encode("utf-8")),
                    "label_for_unknown_event",
                    f"event {p.label.ref_event_id[:60]!r} did not arrive within buffer.label_wait_s ({wait_s:.0f}s) of this label")
            for p in expired])
        try:
            self._deliver_refused(batch)
            count = self.store.expire_labels([p.label.event_id for p in expired])
        except (DLQUnavailable, StorageUnavailable) as exc:
            log.warning("%d expired label event(s) stay pending until the next attempt: %s", len(expired), exc)
            return
        self.metrics.labels_expired.inc(count)
        self.metrics.events_invalid.labels(reason="label_for_unknown_event").inc(count)
        log.warning("%d label event(s) sent to the DLQ: their events did not arrive within %.0fs", count, wait_s)

    # -- outages -------------------------------------------------------------------------------
    def _hold(self, batch: PendingBatch, cause: str, kind: str, detail: str) -> None:
        """Keep the batch, pause fetching, schedule a retry; log once per outage (and on a new cause)."""
        self._held = batch
        first = self._outage is None
        if self._outage is None:
            self._outage = Outage(cause, kind, detail, self.settings.buffer.retry_max_s)
        elif (self._outage.cause, self._outage.kind) != (cause, kind):
            log.warning("ingestion still paused, now because %s is unavailable (%s): %s", cause, kind, detail)
        self._outage.failed_again(cause, kind, detail)
        if first:
            log.error("ingestion paused: %s unavailable (%s): %s. Holding %d records (nothing is committed past "
                      "the last stored batch); retrying with backoff up to %.0fs", cause, kind, detail, batch.size,
                      self.settings.buffer.retry_max_s)
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())
        self.metrics.ingest_paused.labels(cause=cause).set(1)
        self.state.outage = self._outage.describe()

    def _recovered(self) -> None:
        outage = self._outage
        assert outage is not None
        self._outage = None
        self.state.outage = None
        for cause in ("buffer", "dlq", "internal"):
            self.metrics.ingest_paused.labels(cause=cause).set(0)
        log.warning("ingestion resumed: %s is available again after %.0fs and %d failed attempt(s)",
                    outage.cause, time.monotonic() - outage.since, outage.attempts)

    def apply(self, settings: Settings) -> None:
        """A reloaded config: per-batch limits take effect at the next batch; the pause switch if it changed."""
        if settings.pause.ingestion != self.settings.pause.ingestion:
            self.operator_paused = settings.pause.ingestion
        self.settings = settings

    def drop_held(self, revoked: set[TopicPartition]) -> None:
        """Partitions of a held batch leave us: forget it (the committed offsets are before it)."""
        held = self._held
        if held is None or not held.partitions & revoked:
            return
        log.warning("partitions %s revoked while a batch of %d records was held; it is read again from the "
                    "committed offsets", sorted(tp.partition for tp in held.partitions & revoked), held.size)
        self._held = None
        self.to_resume.update(held.partitions - revoked)

    def _push_back(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Records this loop will not process now are fetched again: seek to the first of each partition."""
        assert self._consumer is not None
        for tp, records in batch.items():
            if records:
                self._consumer.seek(tp, records[0].offset)

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
    def _check_stalled(self, tp: TopicPartition, position: int, lag: int | None, now: float, paused: bool) -> None:
        """A partition with records waiting whose position has not moved for ``kafka.stalled_after_s`` (and
        that nobody paused) is stuck — typically on a batch the client cannot decode. Say so, per partition.
        With the lag unknown (a fetch that could not be parsed leaves no high watermark), polls failing
        since the position last moved count as records waiting."""
        last = self.progress_by_partition.get(tp)
        if last is None:
            moved_at, since = 0.0, now  # not seen moving yet
        elif position != last[0]:
            moved_at, since = now, now
        else:
            moved_at, since = last[1], last[2]
        waiting = lag > 0 if lag is not None else self.state.last_poll_error_at > moved_at
        if not waiting or paused:
            since = now
        self.progress_by_partition[tp] = (position, moved_at, since)
        stuck = now - since >= self.kafka.stalled_after_s
        self.metrics.partition_stalled.labels(partition=str(tp.partition)).set(1 if stuck else 0)
        if stuck and tp.partition not in self.state.stalled:
            log.error("partition %d does not move: %s records waiting at offset %d for %.0fs (last poll error: %s)",
                      tp.partition, "some" if lag is None else lag, position, now - since, self.state.last_poll_error or "none")
        if stuck:
            self.state.stalled[tp.partition] = {"offset": position, "lag": lag, "stalled_s": round(now - since),
                                                "last_poll_error": self.state.last_poll_error}
        else:
            self.state.stalled.pop(tp.partition, None)

    def _observe(self, result: BatchResult, invalid: Counter[str], record_ts: list[int], committed: bool) -> None:
        m = self.metrics
        m.events_consumed.inc(len(record_ts))
        m.events_stored.inc(len(result.inserted))
        m.events_duplicate.inc(result.duplicates)
        m.dictionary_updates.inc(result.dictionary_updates)
        m.labels_applied.inc(result.labels_applied)
        m.label_corrections.inc(result.corrections)
        for delay_ms in result.label_delays_ms:
            m.label_delay.observe(delay_ms / 1000)
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
        self.state.outage = self._outage.describe() if self._outage else None
        connections = consumer.metrics().get("consumer-metrics", {}).get("connection-count", 0)
        self.state.connected = bool(connections)
        self.metrics.kafka_connected.set(1 if self.state.connected else 0)
        assignment = consumer.assignment()
        self.state.assigned = len(assignment)
        for tp in assignment:
            highwater = consumer.highwater(tp)
            try:
                position = consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if position is None:
                continue
            lag = max(0, highwater - position) if highwater is not None else None  # unknown until a fetch parsed
            if lag is not None:
                self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(lag)
            self._check_stalled(tp, position, lag, now, paused=tp in consumer.paused())
        if self.store.dictionary is not None:
            self.metrics.dictionary_words.set(len(self.store.dictionary.words))
