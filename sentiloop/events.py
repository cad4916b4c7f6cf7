"""FeedbackEvent schema v1: parse raw Kafka record bytes into a validated event, or say why not.

A record is one of two kinds:

- an **event**: ``{"event_id", "text", ...}``, optionally with its ``label`` (labelled feedback) or
  without one (a prediction logged from traffic, usually with ``predicted_label`` and ``model_version``);
- a **label event**: ``{"event_id", "ref_event_id", "label", "ts"?}`` and nothing else: the label of the
  event ``ref_event_id``, arriving later. It has its own ``event_id`` so that a redelivered label is
  recognised as one (a bare re-sent ``{event_id, label}`` could not tell a redelivery from a correction).

Every failure raises :class:`InvalidEvent` whose ``reason`` is a short, bounded metric label
(``not_utf8``, ``not_json``, ``missing_field`` ...) and whose ``detail`` names the field.

Valid JSON is not always storable, so these are refused explicitly rather than left to fail later:
integers beyond 64 bits (Python's int() would raise a plain ValueError past 4,300 digits),
``NaN``/``Infinity`` (not JSON), lone UTF-16 surrogates (cannot be encoded as UTF-8), NUL characters
(PostgreSQL text cannot hold them), and **duplicate keys** — parsers disagree about which value wins,
so a record that says ``"label"`` twice is ambiguous and goes to the DLQ instead of being guessed at.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentiloop.errors import InvalidEvent

SCHEMA_VERSION = 1
MAX_EVENT_ID = 128
MAX_DOMAIN = 64
MAX_LANG = 16
MAX_MODEL_VERSION = 128
MAX_INT_DIGITS = 19  # fits SQLite's and PostgreSQL's 64-bit integers
MAX_NESTING = 32  # an event is a flat object; the limit makes deep input fail the same way on every thread
KNOWN_FIELDS = frozenset(
    {"event_id", "text", "label", "predicted_label", "model_version", "domain", "lang", "ts", "schema_version", "ref_event_id"}
)
LABEL_EVENT_FIELDS = frozenset({"event_id", "ref_event_id", "label", "ts", "schema_version"})

# All reasons a record can be refused for; bounded so the metric's label set stays small.
REASONS = (
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "empty_text",
    "text_too_long",
    "field_too_long",
    "unknown_label",
    "bad_timestamp",
    "unknown_field",
    "unsupported_schema",
    "duplicate_key",
    "number_out_of_range",
    "unstorable_text",
    "record_too_large",
    "nested_too_deep",
    "unstorable",
    "internal_error",
    "not_a_label_event",
    "label_for_unknown_event",
)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """A validated feedback record; ``label`` is a class index (or None for unlabelled traffic)."""

    event_id: str
    text: str
    label: int | None
    predicted_label: int | None
    model_version: str | None
    domain: str | None
    lang: str | None
    ts_ms: int

    def to_json(self, label_names: list[str]) -> dict[str, Any]:
        """Schema-v1 JSON with label names, as exported to JSONL and accepted back by ``parse_event``."""
        record: dict[str, Any] = {"event_id": self.event_id, "text": self.text, "ts": self.ts_ms}
        if self.label is not None:
            record["label"] = label_names[self.label]
        if self.predicted_label is not None:
            record["predicted_label"] = label_names[self.predicted_label]
        for key in ("model_version", "domain", "lang"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return record


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """The label of an earlier event (``ref_event_id``), identified by its own ``event_id`` for idempotency."""

    event_id: str
    ref_event_id: str
    label: int
    ts_ms: int

    def to_json(self, label_names: list[str]) -> dict[str, Any]:
        return {"event_id": self.event_id, "ref_event_id": self.ref_event_id, "label": label_names[self.label], "ts": self.ts_ms}


def _label_index(value: Any, field: str, label_names: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{field} must be a label name or index, got a boolean")
    if isinstance(value, int):
        if 0 <= value < len(label_names):
            return value
        raise InvalidEvent("unknown_label", f"{field} index {value} is outside 0..{len(label_names) - 1}")
    if isinstance(value, str):
        try:
            return label_names.index(value)
        except ValueError:
            raise InvalidEvent("unknown_label", f"{field} {value[:64]!r} is not one of {label_names}") from None
    raise InvalidEvent("wrong_type", f"{field} must be a label name or index, got {type(value).__name__}")


def _storable(value: str, field: str) -> str:
    """Refuse what a UTF-8 store cannot hold: lone surrogates (valid JSON escapes) and NUL."""
    if "\x00" in value:
        raise InvalidEvent("unstorable_text", f"{field} contains a NUL character (\\u0000) at index {value.index(chr(0))}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            "unstorable_text", f"{field} contains a lone surrogate (\\u{ord(value[exc.start]):04x}) at index {exc.start}: not encodable as UTF-8"
        ) from None
    return value


def _optional_str(payload: dict[str, Any], field: str, max_len: int) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{field} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidEvent("field_too_long", f"{field} has {len(value)} characters, the limit is {max_len}")
    return _storable(value, field)


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidEvent("number_out_of_range", f"an integer has {len(digits.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(digits)


def _no_constants(name: str) -> float:
    raise InvalidEvent("not_json", f"{name} is not valid JSON (only finite numbers are)")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidEvent("duplicate_key", f"key {key[:40]!r} appears more than once; send each field once")
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict means a repeated key")


def _nested_too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """True when arrays/objects nest deeper than ``limit``, brackets inside strings not counted.

    Without it, deep input fails by RecursionError, whose threshold depends on how deep the calling
    thread's stack already is: the same record could be refused on one thread and parsed on another.
    """
    if text.count("[") + text.count("{") <= limit:  # the usual case: no scan needed
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


# Built once: json.loads(..., hooks) would build a new decoder per call, doubling the parse cost.
_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_no_constants, object_pairs_hook=_object_without_duplicates)


def _load_json(decoded: str) -> Any:
    if _nested_too_deep(decoded):
        raise InvalidEvent("nested_too_deep", f"arrays/objects nest deeper than {MAX_NESTING} levels; an event is a flat object")
    try:
        return _DECODER.decode(decoded)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent("not_json", f"not valid JSON: {str(exc)[:120]}") from None


def _timestamp_ms(value: Any, default_ms: int) -> int:
    if value is None:
        return default_ms
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "ts must be an ISO-8601 string or epoch milliseconds, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 <= value < 1e14:
            raise InvalidEvent("bad_timestamp", f"ts {value!r} is not a plausible epoch-milliseconds value")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            epoch_ms = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise InvalidEvent("bad_timestamp", f"ts {value[:40]!r} is not an ISO-8601 time") from None
        if not 0 <= epoch_ms < 1e14:
            raise InvalidEvent("bad_timestamp", f"ts {value[:40]!r} is before 1970 or implausibly far ahead")
        return epoch_ms
    raise InvalidEvent("bad_timestamp", f"ts must be an ISO-8601 string or epoch milliseconds, got {type(value).__name__}")


def _event_id(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if value is None:
        raise InvalidEvent("missing_field", f"{field} is required")
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{field} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_EVENT_ID:
        raise InvalidEvent("field_too_long", f"{field} must have 1..{MAX_EVENT_ID} characters, has {len(value)}")
    return _storable(value, field)


def _label_event(payload: dict[str, Any], label_names: list[str], record_ts_ms: int) -> LabelEvent:
    """A record with ``ref_event_id``: only the label fields are allowed, and the label is required."""
    extra = sorted(set(payload) - LABEL_EVENT_FIELDS)
    if extra:
        raise InvalidEvent("not_a_label_event", f"a label event (it has ref_event_id) carries only {sorted(LABEL_EVENT_FIELDS)}; "
                           f"it also has {', '.join(repr(e) for e in extra[:5])}: send text and the rest on the event itself")
    label = _label_index(payload.get("label"), "label", label_names)
    if label is None:
        raise InvalidEvent("missing_field", "label is required in a label event (one with ref_event_id)")
    label_id, ref = _event_id(payload, "event_id"), _event_id(payload, "ref_event_id")
    if label_id == ref:
        raise InvalidEvent("not_a_label_event", "a label event needs its own event_id, different from ref_event_id "
                           "(that is what makes a redelivered label recognisable)")
    return LabelEvent(label_id, ref, label, _timestamp_ms(payload.get("ts"), record_ts_ms))


ParsedRecord = FeedbackEvent | LabelEvent


def parse_event(raw: bytes | None, label_names: list[str], record_ts_ms: int, max_text_chars: int = 5000,
                max_record_bytes: int = 1 << 20) -> ParsedRecord:
    """Validate one record value (an event or a label event); raises InvalidEvent with a reason and the offending field."""
    if raw is None:
        raise InvalidEvent("not_json", "record has no value (tombstone)")
    if len(raw) > max_record_bytes:
        raise InvalidEvent("record_too_large", f"the value has {len(raw)} bytes, the limit is {max_record_bytes} (buffer.max_record_bytes)")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", f"byte {exc.start} is not valid UTF-8") from None
    payload = _load_json(decoded)
    if not isinstance(payload, dict):
        raise InvalidEvent("not_object", f"the value must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - KNOWN_FIELDS)
    if unknown:
        raise InvalidEvent("unknown_field", f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:5])}")
    schema = payload.get("schema_version", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise InvalidEvent("unsupported_schema", f"schema_version {schema!r} is not supported (expected {SCHEMA_VERSION})")

    if "ref_event_id" in payload:
        return _label_event(payload, label_names, record_ts_ms)
    for field in ("event_id", "text"):
        if field not in payload or payload[field] is None:
            raise InvalidEvent("missing_field", f"{field} is required")
    event_id = _event_id(payload, "event_id")
    text = payload["text"]
    if not isinstance(text, str):
        raise InvalidEvent("wrong_type", f"text must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise InvalidEvent("empty_text", "text is empty after trimming whitespace")
    if len(text) > max_text_chars:
        raise InvalidEvent("text_too_long", f"text has {len(text)} characters, the limit is {max_text_chars}")
    _storable(text, "text")

    return FeedbackEvent(
        event_id=event_id,
        text=text,
        label=_label_index(payload.get("label"), "label", label_names),
        predicted_label=_label_index(payload.get("predicted_label"), "predicted_label", label_names),
        model_version=_optional_str(payload, "model_version", MAX_MODEL_VERSION),
        domain=_optional_str(payload, "domain", MAX_DOMAIN),
        lang=_optional_str(payload, "lang", MAX_LANG),
        ts_ms=_timestamp_ms(payload.get("ts"), record_ts_ms),
    )
