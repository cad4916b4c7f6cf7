"""Delayed labels, part of the contract every backend passes (the ``backend`` fixture): applied once, out of
order, corrections, redelivery, expiry; and SQLite's migration of a version-1 buffer."""

import sqlite3
from pathlib import Path

import pytest

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.buffer.sqlite import SCHEMA, SCHEMA_VERSION
from sentiloop.errors import BufferFileError
from sentiloop.events import FeedbackEvent, LabelEvent
from tests.buffer.conftest import LABELS, Backend


def traffic(i: int, text: str = "good movie", ts: int = 1000) -> SourcedEvent:
    return SourcedEvent(FeedbackEvent(f"e{i}", text, None, 3, "v1", "tweets", "en", ts), "t", 0, i)


def label(name: str, ref: int, value: int, ts: int = 5000) -> SourcedEvent:
    return SourcedEvent(LabelEvent(name, f"e{ref}", value, ts), "t", 1, 100 + ts)




def test_a_delayed_label_attaches_to_its_prediction_once(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([traffic(1), traffic(2)])
    assert store.count_after(0) == 0 and store.stats().events_awaiting_label == 2
    before = store.label_position()
    result = store.append_batch([label("l1", 1, 4, ts=61_000)])
    assert result.labels_applied == 1 and result.label_delays_ms == [60_000]
    assert [e.event_id for e in result.labelled] == ["e1"] and result.labelled[0].label == 4
    assert result.dictionary_updates == 1 and store.dictionary.words["movie"].updates == 1
    stored = next(e for e in store.iter_events() if e.event.event_id == "e1")
    assert stored.event.label == 4 and stored.event.predicted_label == 3 and stored.label_seq == before + 1
    assert store.count_after(before) == 1  # the volume trigger sees the label when it matures
    again = store.append_batch([label("l1", 1, 4, ts=61_000)])  # redelivered
    assert again.duplicates == 1 and again.labels_applied == 0 and not again.labelled
    assert store.dictionary.words["movie"].updates == 1 and store.label_position() == before + 1
    stats = store.stats()
    assert stats.events_labelled == 1 and stats.events_awaiting_label == 1 and stats.labels_pending == 0
    store.close()


def test_a_label_before_its_event_waits_and_applies_when_it_arrives(backend: Backend) -> None:
    store = backend.open()
    early = store.append_batch([label("l1", 7, 0)])
    assert early.labels_pending == 1 and early.labels_applied == 0 and store.stats().labels_pending == 1
    late = store.append_batch([traffic(7, "awful plot")])
    assert late.labels_applied == 1 and [e.label for e in late.labelled] == [0]
    assert store.stats().labels_pending == 0 and store.dictionary.words["awful"].updates == 1
    same_batch = store.append_batch([label("l2", 8, 1), traffic(8, "dull plot")])  # the label first, in one batch
    assert same_batch.labels_applied == 1 and same_batch.labels_pending == 0
    store.close()


def test_corrections_latest_ts_wins_whatever_the_arrival_order(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([traffic(1)])
    store.append_batch([label("a", 1, 4, ts=2000)])
    position = store.label_position()
    corrected = store.append_batch([label("b", 1, 0, ts=3000)])
    assert corrected.corrections == 1 and [e.label for e in corrected.labelled] == [0]
    assert store.label_position() == position + 1  # a corrected label is new training data
    older = store.append_batch([label("c", 1, 4, ts=2500)])  # older than the correction: no effect
    assert older.corrections == 0 and not older.labelled
    confirm = store.append_batch([label("d", 1, 0, ts=4000)])
    assert confirm.corrections == 0 and not confirm.labelled
    redelivered = store.append_batch([label("a", 1, 4, ts=2000), label("b", 1, 0, ts=3000)])
    assert redelivered.duplicates == 2 and not redelivered.labelled
    assert next(store.iter_events()).event.label == 0
    assert store.stats().label_corrections == 1
    assert store.dictionary.words["movie"].updates == 2  # the first label and the correction, once each
    store.close()


def test_two_labels_for_an_absent_event_resolve_by_ts_when_it_arrives(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([label("new", 1, 0, ts=9000), label("old", 1, 4, ts=1000)])
    result = store.append_batch([traffic(1)])
    assert next(store.iter_events()).event.label == 0
    assert result.labels_applied == 1 and result.corrections == 1  # applied in ts order: old, then its correction
    store.close()


def test_pending_labels_expire_only_after_the_caller_says_so(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([label("l1", 1, 2), label("l2", 2, 2)])
    waiting = store.pending_labels_older_than(10**15)
    assert sorted(p.label.event_id for p in waiting) == ["l1", "l2"] and waiting[0].topic == "t"
    assert store.pending_labels_older_than(0) == []
    store.append_batch([traffic(2)])  # l2 applied meanwhile: expiring it changes nothing
    assert store.expire_labels(["l1", "l2"]) == 1
    stats = store.stats()
    assert stats.labels_pending == 0 and stats.labels_expired == 1
    assert store.append_batch([traffic(1)]).labels_applied == 0  # an expired label never applies later
    assert store.append_batch([label("l1", 1, 2)]).duplicates == 1
    store.close()


def test_retention_retires_labels_with_their_events(backend: Backend) -> None:
    store = backend.open(retention_days=1)
    store.append_batch([traffic(1), label("l1", 1, 4)])
    assert store.apply_retention(now_ms=10**13) == 1
    assert store.append_batch([traffic(1), label("l1", 1, 4)]).duplicates == 2
    store.close()


def test_a_version_1_buffer_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO events (event_id, topic, partition, offset, text, label, event_ts_ms, ingested_ms, split)"
                 " VALUES ('old', 't', 0, 0, 'fine film', 3, 1, 1, 'train'), ('unl', 't', 0, 1, 'a film', NULL, 2, 2, 'train')")
    conn.execute("INSERT INTO marks VALUES ('last_retrain', 1, 0)")
    conn.commit()
    conn.close()
    store = SQLiteBufferStore(path, LABELS)
    assert [e.label_seq for e in store.iter_events()] == [1, None]  # old labels keep their position: marks stay valid
    assert store.count_since("last_retrain") == 0
    store.append_batch([SourcedEvent(LabelEvent("l", "unl", 1, 5), "t", 0, 2)])
    assert store.count_since("last_retrain") == 1
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(BufferFileError, match="newer than this sentiloop"):
        SQLiteBufferStore(path, LABELS)


def test_the_readme_example_file_stores_as_documented(backend: Backend) -> None:
    from sentiloop.events import parse_event

    lines = (Path(__file__).resolve().parents[2] / "examples" / "feedback_with_labels.jsonl").read_bytes().splitlines()
    records = [SourcedEvent(parse_event(line, LABELS, 0), "t", 0, i) for i, line in enumerate(lines)]
    store = backend.open()
    for start in range(0, len(records), 25):  # in poll-batch sized pieces, as the daemon would
        store.append_batch(records[start : start + 25])
    stats = store.stats()
    assert stats.events_stored == 120 and stats.events_labelled == 108 and stats.events_awaiting_label == 12
    assert stats.label_corrections == 3 and stats.labels_pending == 0
    store.close()
