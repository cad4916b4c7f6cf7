"""Fuzzing malformed records: unit-level on the parser, and through the real broker and daemon."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sentiloop.errors import InvalidEvent
from sentiloop.events import REASONS, parse_event
from tests.conftest import buffer_stats, wait_until
from tests.test_integration_ingest import read_topic

LABELS = ["very_negative", "negative", "neutral", "positive", "very_positive"]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)


@given(st.binary(max_size=300))
def test_parser_never_raises_anything_but_invalid_event_on_bytes(raw: bytes) -> None:
    try:
        parse_event(raw, LABELS, 0)
    except InvalidEvent as exc:
        assert exc.reason in REASONS


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(st.dictionaries(st.sampled_from(["event_id", "text", "label", "ts", "domain", "lang", "x"]), json_scalars | st.lists(json_scalars)))
def test_parser_on_arbitrary_objects(payload: dict) -> None:
    try:
        event = parse_event(json.dumps(payload).encode(), LABELS, 0)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(event.event_id, str) and event.text


def _bad_records() -> st.SearchStrategy[tuple[bytes, str]]:
    """Malformed records, each with the reason the daemon must give for it."""
    eid = st.uuids().map(lambda u: f"bad-{u.hex}")
    return st.one_of(
        st.binary(min_size=1, max_size=50).filter(lambda b: not _is_utf8(b)).map(lambda b: (b, "not_utf8")),
        st.text(min_size=1, max_size=40).filter(lambda t: not _is_json(t)).map(lambda t: (t.encode(), "not_json")),
        st.lists(st.integers(), max_size=3).map(lambda v: (json.dumps(v).encode(), "not_object")),
        eid.map(lambda i: (json.dumps({"event_id": i}).encode(), "missing_field")),
        st.tuples(eid, st.integers()).map(lambda t: (json.dumps({"event_id": t[0], "text": t[1]}).encode(), "wrong_type")),
        st.tuples(eid, st.text(alphabet=" \t\n", max_size=5)).map(lambda t: (json.dumps({"event_id": t[0], "text": t[1]}).encode(), "empty_text")),
        st.tuples(eid, st.text(alphabet="xyz", min_size=1, max_size=10).filter(lambda s: s not in LABELS)).map(
            lambda t: (json.dumps({"event_id": t[0], "text": "ok", "label": t[1]}).encode(), "unknown_label")),
        eid.map(lambda i: (json.dumps({"event_id": i, "text": "y" * 5001}).encode(), "text_too_long")),
    )


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@pytest.mark.integration
# Each example runs a real daemon: generate only (shrinking would restart it hundreds of times).
@settings(max_examples=3, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bad=st.lists(_bad_records(), min_size=5, max_size=40), good=st.integers(min_value=1, max_value=30))
def test_malformed_records_reach_the_dlq_and_valid_neighbours_are_stored(broker, daemon_factory, tmp_path: Path, bad, good) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import produce

    topic = f"fz{uuid.uuid4().hex[:8]}"
    data = tmp_path / topic
    valid = [{"event_id": f"ok-{topic}-{i}", "text": f"fine neighbour {i}", "label": i % 5} for i in range(good)]
    mixed: list[bytes | dict] = []
    for i, (raw, _) in enumerate(bad):  # interleave so every bad record has valid neighbours
        mixed.append(raw)
        if i < len(valid):
            mixed.append(valid[i])
    mixed.extend(valid[len(bad):])
    produce(broker.bootstrap, topic, mixed, partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, name=topic)
    wait_until(lambda: buffer_stats(data)["events_stored"] == good, what=f"{good} valid events stored")
    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", len(bad))
    received = sorted((r.value, dict(r.headers)["sentiloop-reason"].decode()) for r in dlq)  # DLQ has 3 partitions
    assert received == sorted(bad)
    assert daemon.alive()
    stats = buffer_stats(data)
    assert sum(stats["events_invalid"].values()) == len(bad)
    daemon.stop()
