"""Delayed labels on the real thing: broker, daemon subprocesses, SQLite, DLQ, SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sentiloop.models.word_sentiment import WordSentimentModel
from tests.conftest import buffer_stats, dictionary_rows, make_events, produce, wait_until
from tests.consumers.test_integration_ingest import assert_same_dictionary, http_get, metrics_port, read_topic

pytestmark = pytest.mark.integration
DELAY = 300  # a label follows its prediction by this many records
EARLY = 7  # every EARLY-th label arrives before its event (out of order)


def delayed_stream(n: int, seed: int) -> tuple[list[dict], list[tuple[str, int]]]:
    """Unlabelled predictions, each labelled DELAY records later (every EARLY-th just before it instead),
    and the (text, label) order a clean single pass applies them in. A label's ts is twice the stream
    position where it is applied, so that order holds whatever the poll batches are (ts breaks ties)."""
    placed: list[tuple[float, dict]] = []
    applied: list[tuple[float, str, int]] = []
    for i, event in enumerate(make_events(n, seed=seed)):
        early = i % EARLY == 0
        at = i if early else i + DELAY + 0.5  # where the label takes effect
        placed.append((i, {k: v for k, v in event.items() if k != "label"} | {"predicted_label": 2, "ts": 2 * i}))
        label = {"event_id": f"label-{i}", "ref_event_id": event["event_id"], "label": event["label"], "ts": int(2 * at)}
        placed.append((i - 0.5 if early else at, label))
        applied.append((at, event["text"], event["label"]))
    return [record for _, record in sorted(placed, key=lambda p: p[0])], [(t, label) for _, t, label in sorted(applied)]


def clean_pass(order: list[tuple[str, int]]) -> dict[str, tuple[float, int]]:
    model = WordSentimentModel([-2, -1, 0, 1, 2]).fit([t for t, _ in order], [label for _, label in order])
    return {w: (e.score, e.updates) for w, e in model.words.items()}


def test_sigkill_mid_stream_every_delayed_label_attaches_once(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stream, order = delayed_stream(6000, seed=11)
    produce(broker.bootstrap, topic, stream, partitions=1)
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, kafka={"max_poll_records": 150})
    wait_until(lambda: buffer_stats(data).get("events_labelled", 0) >= 1500, what="a part of the labels")
    daemon.kill()  # SIGKILL: no chance to commit or flush
    assert buffer_stats(data)["events_labelled"] < 6000, "the stream finished before the kill; make it longer"

    restarted = daemon_factory(broker.bootstrap, topic, name="restarted")
    wait_until(lambda: buffer_stats(data)["events_labelled"] == 6000, timeout=120, what="every label after restart")
    stats = buffer_stats(data)
    assert stats["events_stored"] == 6000 and stats["events_awaiting_label"] == 0 and stats["labels_pending"] == 0
    assert stats["dictionary_updates"] == 6000 and stats["label_corrections"] == 0  # each label applied exactly once
    assert_same_dictionary(dictionary_rows(data), clean_pass(order))
    status, body = http_get(metrics_port(restarted), "/metrics")
    assert status == 200 and "sentiloop_label_delay_seconds_count" in body


def test_a_label_whose_event_never_comes_goes_to_the_dlq_with_a_reason(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stray = {"event_id": "label-x", "ref_event_id": "never-sent", "label": "positive", "ts": 5}
    produce(broker.bootstrap, topic, [{"event_id": "p1", "text": "fine day"}, stray,
                                      {"event_id": "label-1", "ref_event_id": "p1", "label": "neutral"}])
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, buffer={"label_wait_s": 2})
    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", 1, timeout_s=60)
    assert dict(dlq[0].headers)["sentiloop-reason"] == b"label_for_unknown_event"
    assert json.loads(dlq[0].value) == {**stray, "label": "positive"}
    wait_until(lambda: buffer_stats(data).get("labels_expired") == 1, what="the label marked expired")
    stats = buffer_stats(data)
    assert stats["labels_pending"] == 0 and stats["events_labelled"] == 1 and stats["events_awaiting_label"] == 0
    _, body = http_get(metrics_port(daemon), "/metrics")
    assert 'sentiloop_events_invalid_total{reason="label_for_unknown_event"} 1.0' in body
    assert "sentiloop_labels_applied_total 1.0" in body
    daemon.stop()
    out = subprocess.run([sys.executable, "-m", "sentiloop", "status", "--config", str(daemon.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "awaiting" in out.stdout
