"""Integration tests on the real thing: bundled broker on 127.0.0.1, daemon subprocesses, SQLite, HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer

from sentiloop.consumers.broker import EmbeddedBroker, free_port
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.conftest import buffer_stats, dictionary_rows, make_events, produce, wait_until

pytestmark = pytest.mark.integration


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:  # type: ignore[type-arg]
    consumer = KafkaConsumer(topic, bootstrap_servers=[bootstrap], group_id=f"reader-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    records: list = []  # type: ignore[type-arg]
    try:
        wait_until(lambda: records.extend(r for rs in consumer.poll(500).values() for r in rs) or len(records) >= expected,
                   timeout=timeout_s, interval=0, what=f"{expected} records on {topic}")
    finally:
        consumer.close()
    return records


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening (yet)
        return 0, ""


def metrics_port(daemon) -> int:  # type: ignore[no-untyped-def]
    return int(yaml.safe_load(daemon.config_path.read_text())["metrics"]["port"])


def clean_single_pass(events: list[dict]) -> dict[str, tuple[float, int]]:
    model = WordSentimentModel([-2, -1, 0, 1, 2]).fit([e["text"] for e in events], [e["label"] for e in events])
    return {w: (e.score, e.updates) for w, e in model.words.items()}


def assert_same_dictionary(actual: dict[str, tuple[float, int]], expected: dict[str, tuple[float, int]]) -> None:
    assert actual.keys() == expected.keys()
    for word, (score, updates) in expected.items():
        assert actual[word][1] == updates, word
        assert actual[word][0] == pytest.approx(score, abs=1e-9), word


def test_end_to_end_dlq_metrics_health_status(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = make_events(300)
    bad = [b"not json", json.dumps({"event_id": "x1"}).encode(), json.dumps({"event_id": "x2", "text": "t", "label": "nope"}).encode()]
    produce(broker.bootstrap, topic, events[:150] + bad + events[150:])
    daemon = daemon_factory(broker.bootstrap, topic)
    wait_until(lambda: buffer_stats(tmp_path / "data")["events_stored"] == 300, what="300 events stored")

    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", 3)
    reasons = sorted(dict(r.headers)["sentiloop-reason"].decode() for r in dlq)
    assert reasons == ["missing_field", "not_json", "unknown_label"]
    assert sorted(r.value for r in dlq) == sorted(bad)  # the original bytes

    port = metrics_port(daemon)
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, what="readiness")
    status, body = http_get(port, "/metrics")
    assert status == 200
    for line in ("sentiloop_events_consumed_total 303.0", "sentiloop_events_stored_total 300.0",
                 'sentiloop_events_invalid_total{reason="not_json"} 1.0', "sentiloop_buffer_events 300.0",
                 "sentiloop_kafka_connected 1.0", "sentiloop_dictionary_updates_total 300.0"):
        assert line in body
    assert "sentiloop_ingest_latency_seconds_count 303.0" in body
    assert 'sentiloop_consumer_lag{partition="0"}' in body
    assert http_get(port, "/healthz")[0] == 200
    assert http_get(port, "/nope")[0] == 404

    config = str(daemon.config_path)
    out = subprocess.run([sys.executable, "-m", "sentiloop", "status", "--config", config, "--json"],
                         capture_output=True, text=True, check=True)
    status_json = json.loads(out.stdout)
    assert status_json["events_stored"] == 300 and status_json["events_invalid_total"] == 3
    assert sum(status_json["per_label"].values()) == 300
    assert status_json["dictionary_words"] > 0
    shown = subprocess.run([sys.executable, "-m", "sentiloop", "dictionary", "show", "great", "--config", config, "--json"],
                           capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["status"] == "known"

    assert daemon.stop() == 0  # SIGTERM: finish, commit, exit 0
    assert "sentiloop stopped" in daemon.log()
    assert (tmp_path / "data" / "dictionary" / "word_sentiment_dict.json").exists()


def test_redelivery_and_resend_change_nothing(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = make_events(200, seed=3)
    produce(broker.bootstrap, topic, events)
    daemon = daemon_factory(broker.bootstrap, topic)
    wait_until(lambda: buffer_stats(tmp_path / "data")["events_stored"] == 200, what="first pass")
    daemon.stop()
    before = dictionary_rows(tmp_path / "data")

    produce(broker.bootstrap, topic, events[:50])  # re-sent by a producer
    # A new group id reads the whole topic again: every event is redelivered.
    again = daemon_factory(broker.bootstrap, topic, name="again", kafka={"group_id": f"other-{topic}"})
    wait_until(lambda: buffer_stats(tmp_path / "data")["events_duplicate"] == 250, what="250 duplicates")
    again.stop()
    stats = buffer_stats(tmp_path / "data")
    assert stats["events_stored"] == 200
    assert dictionary_rows(tmp_path / "data") == before


def test_sigkill_mid_stream_then_restart_equals_clean_pass(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = make_events(20_000, seed=7)
    produce(broker.bootstrap, topic, events, partitions=1)  # one partition: a single, well-defined order
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, kafka={"max_poll_records": 200})
    wait_until(lambda: buffer_stats(data)["events_stored"] >= 3000, what="a part of the stream")
    daemon.kill()  # SIGKILL: no chance to commit or flush
    killed_at = buffer_stats(data)["events_stored"]
    assert killed_at < 20_000, "the stream finished before the kill; make it longer"

    daemon_factory(broker.bootstrap, topic, name="restarted")
    wait_until(lambda: buffer_stats(data)["events_stored"] == 20_000, timeout=120, what="all events after restart")
    stats = buffer_stats(data)
    assert stats["events_labelled"] == 20_000
    assert stats["dictionary_updates"] == 20_000  # applied exactly once each
    assert_same_dictionary(dictionary_rows(data), clean_single_pass(events))


def test_broker_stop_and_restart_while_daemon_runs(topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    data = tmp_path / "data"
    with EmbeddedBroker("127.0.0.1", port) as own:
        produce(own.bootstrap, topic, make_events(100, prefix="a"))
        daemon = daemon_factory(own.bootstrap, topic)
        wait_until(lambda: buffer_stats(data)["events_stored"] == 100, what="events before the outage")
    wait_until(lambda: "sentiloop_kafka_connected 0.0" in http_get(metrics_port(daemon), "/metrics")[1],
               what="kafka_connected to drop to 0")
    assert daemon.alive()
    assert http_get(metrics_port(daemon), "/readyz")[0] == 503
    with EmbeddedBroker("127.0.0.1", port) as again:  # in-memory broker: it comes back empty
        produce(again.bootstrap, topic, make_events(100, prefix="b"))
        wait_until(lambda: buffer_stats(data)["events_stored"] == 200, timeout=90, what="events after the outage")
        wait_until(lambda: http_get(metrics_port(daemon), "/readyz")[0] == 200, what="ready again")
    assert daemon.alive()


def test_two_daemons_in_one_group_store_each_event_once(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    first = daemon_factory(broker.bootstrap, topic, name="one")
    second = daemon_factory(broker.bootstrap, topic, name="two")
    produce(broker.bootstrap, topic, make_events(1000, prefix="p"), partitions=3)

    def both_assigned() -> bool:
        lags = [http_get(metrics_port(d), "/metrics")[1].count("sentiloop_consumer_lag{") for d in (first, second)]
        return all(lags) and sum(lags) == 3

    wait_until(both_assigned, timeout=60, what="the group to split the 3 partitions")
    produce(broker.bootstrap, topic, make_events(2000, prefix="q", seed=5), partitions=3)
    wait_until(lambda: buffer_stats(data)["events_stored"] == 3000, timeout=90, what="3000 events stored")
    stats = buffer_stats(data)
    assert stats["dictionary_updates"] == 3000
    assert stats["events_duplicate"] == 0
    assert first.alive() and second.alive()
    rows = dictionary_rows(data)
    assert sum(1 for _ in rows) > 0
    second.stop()
    produce(broker.bootstrap, topic, make_events(300, prefix="r", seed=9), partitions=3)
    wait_until(lambda: buffer_stats(data)["events_stored"] == 3300, timeout=90, what="the survivor to take over")
