import json

import pytest

from sentiloop.errors import InvalidEvent
from sentiloop.events import REASONS, LabelEvent, parse_event

LABELS = ["very_negative", "negative", "neutral", "positive", "very_positive"]


def parse(value: object, **kw):  # type: ignore[no-untyped-def]
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return parse_event(raw, LABELS, record_ts_ms=1_000, **kw)


def reason_of(value: object, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidEvent) as info:
        parse(value, **kw)
    assert info.value.reason in REASONS
    return info.value.reason


def test_valid_event_with_names_and_indices() -> None:
    event = parse({"event_id": "a", "text": "  great  ", "label": "positive", "predicted_label": 1, "domain": "tweets",
                   "lang": "en", "model_version": "3", "ts": "2026-01-01T00:00:00Z"})
    assert event.text == "great"
    assert event.label == 3 and event.predicted_label == 1
    assert event.ts_ms == 1767225600000
    assert parse({"event_id": "b", "text": "x"}).label is None
    assert parse({"event_id": "c", "text": "x"}).ts_ms == 1_000  # falls back to the record timestamp
    assert parse({"event_id": "d", "text": "x", "ts": 123}).ts_ms == 123


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not_utf8"),
        (b"{not json", "not_json"),
        ([1, 2], "not_object"),
        ({"text": "x"}, "missing_field"),
        ({"event_id": "a"}, "missing_field"),
        ({"event_id": 5, "text": "x"}, "wrong_type"),
        ({"event_id": "a", "text": ["x"]}, "wrong_type"),
        ({"event_id": "a", "text": "   "}, "empty_text"),
        ({"event_id": "a", "text": "x" * 5001}, "text_too_long"),
        ({"event_id": "a" * 129, "text": "x"}, "field_too_long"),
        ({"event_id": "a", "text": "x", "domain": "d" * 65}, "field_too_long"),
        ({"event_id": "a", "text": "x", "label": "great"}, "unknown_label"),
        ({"event_id": "a", "text": "x", "label": 7}, "unknown_label"),
        ({"event_id": "a", "text": "x", "label": True}, "wrong_type"),
        ({"event_id": "a", "text": "x", "ts": "yesterday"}, "bad_timestamp"),
        ({"event_id": "a", "text": "x", "surprise": 1}, "unknown_field"),
        ({"event_id": "a", "text": "x", "schema_version": 2}, "unsupported_schema"),
        # valid JSON that cannot be stored, refused explicitly instead of failing later
        (b'{"event_id":"p","text":"hi","label":' + b"9" * 5000 + b"}", "number_out_of_range"),
        (b'{"event_id":"p","text":"hi","ts":-' + b"1" * 20 + b"}", "number_out_of_range"),
        (b'{"event_id":"p","text":"bad \\ud800 text"}', "unstorable_text"),
        (b'{"event_id":"\\udc00","text":"ok"}', "unstorable_text"),
        (b'{"event_id":"p","text":"ok","domain":"\\ud83d"}', "unstorable_text"),
        (b'{"event_id":"p","text":"nul \\u0000 here"}', "unstorable_text"),
        (b'{"event_id":"p","text":"x","label":1,"label":2}', "duplicate_key"),
        (b'{"event_id":"p","text":"x","ts":NaN}', "not_json"),
        (b'{"event_id":"p","text":"x","ts":-Infinity}', "not_json"),
        (b"[" * 5000 + b"]" * 5000, "nested_too_deep"),
        (b"[" * 33 + b"]" * 33, "nested_too_deep"),
        ({"event_id": "a", "text": "x", "ts": "0001-01-01T00:00:00+23:59"}, "bad_timestamp"),
        ({"event_id": "a", "text": "x", "ts": "1969-12-31T23:59:59Z"}, "bad_timestamp"),
        (b'{"event_id":"a","text":"x","ts":1e400}', "bad_timestamp"),
    ],
)
def test_invalid_records_have_a_reason(value: object, reason: str) -> None:
    assert reason_of(value) == reason


def test_control_characters_other_than_nul_are_kept() -> None:
    assert parse({"event_id": "a", "text": "tab\there\x07bell\x1fend"}).text == "tab\there\x07bell\x1fend"


def test_brackets_inside_strings_are_not_nesting() -> None:
    assert parse({"event_id": "a", "text": "[" * 200 + '"{' * 50}).text.startswith("[[[")


def test_duplicate_keys_are_refused_even_when_nested_or_equal() -> None:
    assert reason_of(b'{"event_id":"p","text":"x","domain":"a","domain":"a"}') == "duplicate_key"
    with pytest.raises(InvalidEvent, match="'domain' appears more than once"):
        parse(b'{"event_id":"p","text":"x","domain":"a","domain":"b"}')


def test_record_size_limit_is_checked_before_parsing() -> None:
    assert reason_of({"event_id": "a", "text": "x" * 300}, max_record_bytes=256) == "record_too_large"
    assert parse({"event_id": "a", "text": "x" * 200}, max_record_bytes=256).text == "x" * 200


def test_detail_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match="label 'great' is not one of"):
        parse({"event_id": "a", "text": "x", "label": "great"})
    with pytest.raises(InvalidEvent, match="text has 11 characters, the limit is 10"):
        parse({"event_id": "a", "text": "x" * 11}, max_text_chars=10)


def test_to_json_round_trip() -> None:
    event = parse({"event_id": "a", "text": "fine", "label": "neutral", "domain": "amazon"})
    again = parse(event.to_json(LABELS))
    assert again == event


def test_label_events_refer_to_a_stored_event_and_carry_only_a_label() -> None:
    label = parse({"event_id": "l1", "ref_event_id": "e1", "label": "negative", "ts": 5_000})
    assert label == LabelEvent("l1", "e1", 1, 5_000)
    assert parse({"event_id": "l1", "ref_event_id": "e1", "label": 0}).ts_ms == 1_000
    assert reason_of({"event_id": "l1", "ref_event_id": "e1"}) == "missing_field"
    assert reason_of({"event_id": "l1", "ref_event_id": "e1", "label": "meh"}) == "unknown_label"
    assert reason_of({"event_id": "e1", "ref_event_id": "e1", "label": 0}) == "not_a_label_event"
    with pytest.raises(InvalidEvent, match="send text and the rest on the event itself"):
        parse({"event_id": "l1", "ref_event_id": "e1", "label": 0, "text": "x"})
    assert reason_of({"event_id": "l1", "ref_event_id": 7, "label": 0}) == "wrong_type"
    assert parse({"event_id": "l1", "ref_event_id": "e1", "label": 0}).to_json(LABELS) == {
        "event_id": "l1", "ref_event_id": "e1", "label": "very_negative", "ts": 1_000}
