"""The consumer's batch path under failures it cannot get from real input any more (the validator
catches those first): a validator bug, an insert that fails for one record, a store that fails
for a while. In-process consumer, real broker, real SQLite buffer; the failures are injected into
the parser or the store, which is what these tests are about."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.buffer.store import BatchResult
from sentiloop.config import KafkaConfig, MetricsConfig, Settings
from sentiloop.consumers import batch as batch_module
from sentiloop.consumers.clients import KafkaClients
from sentiloop.consumers.loop import FeedbackConsumer
from sentiloop.daemon.app import build_dictionary
from sentiloop.errors import StorageUnavailable
from sentiloop.monitoring.metrics import IngestMetrics
from tests.conftest import make_events, produce, wait_until
from tests.consumers.test_integration_ingest import assert_same_dictionary, clean_single_pass, read_topic

pytestmark = pytest.mark.integration


class FlakyStore(SQLiteBufferStore):
    """A real buffer whose writes fail on purpose: for one event id always, or for the first N batches."""

    def __init__(self, *args: Any, poison_id: str | None = None, outages: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poison_id = poison_id
        self.outages = outages
        self.calls = 0

    def append_batch(self, records: Sequence[SourcedEvent], invalid: Any = None) -> BatchResult:
        self.calls += 1
        if self.outages and records:
            self.outages -= 1
            raise StorageUnavailable("disk_full", "injected: database or disk is full")
        if any(r.event.event_id == self.poison_id for r in records):
            raise OverflowError("injected: Python int too large to convert to SQLite INTEGER")
        return super().append_batch(records, invalid)


def settings_for(broker_bootstrap: str, topic: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        kafka=KafkaConfig(bootstrap_servers=[broker_bootstrap], topic=topic, group_id=f"g-{topic}", partitions=1,
                          poll_timeout_ms=200),
        metrics=MetricsConfig(enabled=False),
        buffer={"retry_max_s": 0.5},
    )


@pytest.fixture
def running_consumer(broker) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    started: list[tuple[threading.Thread, threading.Event, FeedbackConsumer]] = []

    def start(settings: Settings, store: SQLiteBufferStore, clients: KafkaClients | None = None) -> FeedbackConsumer:
        consumer = FeedbackConsumer(settings, [broker.bootstrap], store, IngestMetrics(), clients=clients)
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        thread.start()
        started.append((thread, stop, consumer))
        return consumer

    yield start
    for thread, stop, consumer in started:
        stop.set()
        thread.join(timeout=30)
        consumer.store.close()


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return next((om.offset for tp, om in offsets.items() if tp.topic == topic), None)


def test_a_validator_bug_sends_the_record_to_the_dlq_as_internal_error(broker, topic, tmp_path, running_consumer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real_parse = batch_module.parse_event

    def parse_with_a_bug(raw: bytes | None, *args: Any) -> Any:
        if raw and b'"bug"' in raw:
            raise KeyError("injected validator bug")
        return real_parse(raw, *args)

    monkeypatch.setattr(batch_module, "parse_event", parse_with_a_bug)
    events = make_events(300, prefix="vb")
    produce(broker.bootstrap, topic, [*events[:150], {"event_id": "bug", "text": "x"}, *events[150:]], partitions=1)
    settings = settings_for(broker.bootstrap, topic, tmp_path)
    store = SQLiteBufferStore(settings.db_path, settings.label_names, build_dictionary(settings))
    consumer = running_consumer(settings, store)
    wait_until(lambda: consumer.metrics.events_stored._value.get() == 300, what="300 events stored")
    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", 1)
    assert dict(dlq[0].headers)["sentiloop-reason"] == b"internal_error"
    assert b"KeyError" in dict(dlq[0].headers)["sentiloop-detail"]


def test_an_unstorable_record_is_isolated_and_its_batch_neighbours_stored(broker, topic, tmp_path, running_consumer) -> None:  # type: ignore[no-untyped-def]
    events = make_events(400, prefix="us", seed=2)
    poison = {"event_id": "poison", "text": "good but unstorable", "label": 4}
    produce(broker.bootstrap, topic, [*events[:200], poison, *events[200:]], partitions=1)
    settings = settings_for(broker.bootstrap, topic, tmp_path)
    store = FlakyStore(settings.db_path, settings.label_names, build_dictionary(settings), poison_id="poison")
    consumer = running_consumer(settings, store)
    wait_until(lambda: store.stats().events_stored == 400, what="the 400 valid events")
    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", 1)
    assert dict(dlq[0].headers)["sentiloop-reason"] == b"unstorable"
    assert b"OverflowError" in dict(dlq[0].headers)["sentiloop-detail"]
    assert store.stats().events_invalid == {"unstorable": 1}
    assert_same_dictionary({w: (e.score, e.updates) for w, e in store.dictionary.words.items()}, clean_single_pass(events))
    wait_until(lambda: committed_offset(broker.bootstrap, settings.kafka.group_id, topic) == 401, what="offsets past the poison")
    assert consumer.state.outage is None


def test_nothing_is_committed_past_the_last_stored_batch_during_an_outage(broker, topic, tmp_path, running_consumer) -> None:  # type: ignore[no-untyped-def]
    events = make_events(1200, prefix="oc", seed=4)
    settings = settings_for(broker.bootstrap, topic, tmp_path)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_poll_records": 200})})
    store = FlakyStore(settings.db_path, settings.label_names, build_dictionary(settings))
    consumer = running_consumer(settings, store)
    produce(broker.bootstrap, topic, events[:400], partitions=1)
    wait_until(lambda: store.stats().events_stored == 400, what="the first 400")
    wait_until(lambda: committed_offset(broker.bootstrap, settings.kafka.group_id, topic) == 400, what="their offsets")
    store.outages = 6  # the next six write attempts fail
    produce(broker.bootstrap, topic, events[400:], partitions=1)
    wait_until(lambda: consumer.state.outage is not None, what="the outage to be seen")
    assert consumer.state.outage["kind"] == "disk_full"
    while store.outages:  # while it lasts, the committed offset never passes what is stored
        assert (committed_offset(broker.bootstrap, settings.kafka.group_id, topic) or 0) <= store.stats().events_stored
    wait_until(lambda: store.stats().events_stored == 1200, what="every event after the outage")
    assert consumer.state.outage is None
    assert store.stats().events_duplicate == 0
    assert consumer.metrics.buffer_write_errors.labels(kind="disk_full")._value.get() == 6
    assert_same_dictionary({w: (e.score, e.updates) for w, e in store.dictionary.words.items()}, clean_single_pass(events))


class _DLQDownFirst:
    """A real producer whose DLQ sends fail until ``healed`` is set (the broker refusing the DLQ topic)."""

    def __init__(self, producer: Any, dlq_topic: str, healed: threading.Event) -> None:
        self._producer, self._dlq_topic, self._healed = producer, dlq_topic, healed
        self.refused_sends = 0

    def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic == self._dlq_topic and not self._healed.is_set():
            from kafka.errors import KafkaTimeoutError

            self.refused_sends += 1
            raise KafkaTimeoutError("injected: DLQ topic unavailable")
        return self._producer.send(topic, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def test_a_dlq_that_does_not_acknowledge_holds_the_batch_through_the_client_seam(broker, topic, tmp_path, running_consumer) -> None:  # type: ignore[no-untyped-def]
    """The Kafka client factory is the transport seam: swapped here, the loop and its DLQ path run unchanged."""
    settings = settings_for(broker.bootstrap, topic, tmp_path)
    healed = threading.Event()
    wrapped: list[_DLQDownFirst] = []

    class FlakyDLQClients(KafkaClients):
        def producer(self, **overrides: Any) -> Any:
            wrapped.append(_DLQDownFirst(super().producer(**overrides), settings.kafka.dlq_topic, healed))
            return wrapped[-1]

    events = make_events(200, prefix="dq", seed=4)
    produce(broker.bootstrap, topic, [*events[:100], {"event_id": "bad", "text": ""}, *events[100:]], partitions=1)
    store = SQLiteBufferStore(settings.db_path, settings.label_names, build_dictionary(settings))
    consumer = running_consumer(settings, store, FlakyDLQClients(settings.kafka, [broker.bootstrap]))
    wait_until(lambda: bool(wrapped) and wrapped[0].refused_sends >= 2, what="the DLQ send refused, then retried")
    assert consumer.metrics.dlq_errors._value.get() >= 1
    assert committed_offset(broker.bootstrap, settings.kafka.group_id, topic) in (None, 0)  # nothing past the held batch
    healed.set()
    wait_until(lambda: consumer.metrics.events_stored._value.get() == 200, what="every valid event stored once the DLQ answers")
    dlq = read_topic(broker.bootstrap, settings.kafka.dlq_topic, 1)
    assert dict(dlq[0].headers)["sentiloop-reason"] == b"empty_text"
