"""Fuzzing records: unit-level on the parser, and through the real broker and daemon.

Two generators: raw bytes, and valid JSON with extreme values (integers of thousands of digits,
lone surrogate escapes, control characters, deep nesting, huge strings, duplicate keys, NaN).
The properties: the parser raises nothing but InvalidEvent with a known reason; whatever it
accepts can be stored in a real buffer; and the real daemon agrees with the parser record by
record — stored or in the DLQ with the parser's reason — and never stops.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.errors import InvalidEvent
from sentiloop.events import REASONS, LabelEvent, parse_event
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.conftest import buffer_stats, wait_until
from tests.consumers.test_integration_ingest import read_topic

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


def _escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


# JSON text fragments with extreme values (written as text: json.dumps cannot make duplicates or NaN).
_extreme_strings = st.one_of(
    st.text(max_size=30).map(_escaped),
    st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\ud83d", "\\u0000", "a\\u0000b"]),
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=10).map(_escaped),
    st.integers(min_value=1, max_value=60_000).map(lambda n: "x" * n),
).map(lambda body: f'"{body}"')
_extreme_numbers = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "4.5", "1e-400"]),
)
_extreme_values = st.one_of(
    _extreme_strings, _extreme_numbers, st.sampled_from(["null", "true", "[]", "{}"]),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
)


@st.composite
def extreme_json(draw: st.DrawFn) -> bytes:
    """A JSON object with an id and a text, plus fields (sometimes repeated) whose values are extreme."""
    event_id = json.dumps(f"x-{draw(st.uuids()).hex}") if draw(st.integers(0, 4)) else draw(_extreme_values)
    text = draw(st.one_of(_extreme_strings, _extreme_values)) if draw(st.integers(0, 3)) else json.dumps(draw(st.text(max_size=40)))
    members = [f'"event_id":{event_id}', f'"text":{text}']
    extra = ["label", "predicted_label", "ts", "domain", "lang", "model_version", "text", "event_id"]
    for key in draw(st.lists(st.sampled_from(extra), max_size=4)):
        value = str(draw(st.integers(0, 4))) if key.endswith("label") and draw(st.booleans()) else draw(_extreme_values)
        members.append(f'"{key}":{value}')
    order = draw(st.permutations(members))
    return ("{" + ",".join(order) + "}").encode("utf-8")


any_record = st.one_of(st.binary(max_size=300), extreme_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=any_record)
def test_parser_refuses_with_a_reason_or_accepts_something_storable(raw: bytes) -> None:
    try:
        event = parse_event(raw, LABELS, 0)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return
    with tempfile.TemporaryDirectory() as tmp:  # a real buffer: accepted means storable
        store = SQLiteBufferStore(Path(tmp) / "b.sqlite3", LABELS, WordSentimentModel([-2, -1, 0, 1, 2], min_count=1))
        try:
            result = store.append_batch([SourcedEvent(event, "t", 0, 0)])
            if isinstance(event, LabelEvent):  # its event is not stored: it waits
                assert result.labels_pending == 1 and store.pending_labels_older_than(10**15)[0].label == event
            else:
                assert [e.event_id for e in result.inserted] == [event.event_id]
                assert next(store.iter_events()).event == event
        finally:
            store.close()


def _bad_records() -> st.SearchStrategy[tuple[bytes, str]]:
    """Malformed records, each with the reason the daemon must give for it."""
    eid = st.uuids().map(lambda u: f"bad-{u.hex}")
    return st.one_of(
        st.binary(min_size=1, max_size=50).filter(lambda b: not _is_utf8(b)).map(lambda b: (b, "not_utf8")),
        st.text(min_size=1, max_size=40).filter(lambda t: not _is_json(t)).map(lambda t: (t.encode(), "not_json")),
        st.lists(st.integers(-10**6, 10**6), max_size=3).map(lambda v: (json.dumps(v).encode(), "not_object")),
        eid.map(lambda i: (json.dumps({"event_id": i}).encode(), "missing_field")),
        st.tuples(eid, st.integers(-10**9, 10**9)).map(lambda t: (json.dumps({"event_id": t[0], "text": t[1]}).encode(), "wrong_type")),
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


def _parser_verdict(raw: bytes) -> str | None:
    """What the daemon must do with ``raw``: None = store it, else the DLQ reason."""
    try:
        parse_event(raw, LABELS, 0)
    except InvalidEvent as exc:
        return exc.reason
    return None


@pytest.mark.integration
@settings(max_examples=3, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=st.lists(any_record, min_size=10, max_size=60))
def test_daemon_agrees_with_the_parser_on_raw_and_extreme_records(broker, daemon_factory, tmp_path: Path, records) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import produce

    topic = f"fx{uuid.uuid4().hex[:8]}"
    data = tmp_path / topic
    verdicts = [_parser_verdict(raw) for raw in records]
    accepted_ids = {parse_event(raw, LABELS, 0).event_id for raw, v in zip(records, verdicts) if v is None}
    refused = sorted((raw, v) for raw, v in zip(records, verdicts) if v is not None)
    anchors = [{"event_id": f"anchor-{topic}-{i}", "text": f"anchor {i}", "label": i % 5} for i in range(3)]
    produce(broker.bootstrap, topic, [anchors[0], *records, anchors[1], anchors[2]], partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, name=topic)
    expected = len(accepted_ids) + len(anchors)
    wait_until(lambda: buffer_stats(data)["events_stored"] == expected, what=f"{expected} events stored")
    if refused:
        dlq = read_topic(broker.bootstrap, f"{topic}.dlq", len(refused))
        assert sorted((r.value, dict(r.headers)["sentiloop-reason"].decode()) for r in dlq) == refused
    assert daemon.alive()
    assert sum(buffer_stats(data)["events_invalid"].values()) == len(refused)
    daemon.stop()
