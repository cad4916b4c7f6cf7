"""The BufferStore contract: every backend in conftest.BACKENDS must pass these (idempotency, the
dictionary's exactness, marks, sampling, export, retention, readers). Delayed labels: test_labels.py."""

from __future__ import annotations

import io
import json
import threading

import pytest

from sentiloop.buffer import SourcedEvent
from sentiloop.errors import ConfigError
from sentiloop.events import FeedbackEvent
from tests.buffer.conftest import Backend


def ev(i: int, text: str = "good movie", label: int | None = 4, domain: str = "tweets") -> SourcedEvent:
    event = FeedbackEvent(f"id{i}", text, label, None, None, domain, "en", 1000 + i)
    return SourcedEvent(event, "t", 0, i)


def test_append_is_idempotent_and_updates_dictionary_once(backend: Backend) -> None:
    store = backend.open()
    first = store.append_batch([ev(1), ev(2, "bad movie", 0)], {"not_json": 2})
    assert len(first.inserted) == 2 and first.duplicates == 0
    again = store.append_batch([ev(1), ev(2, "bad movie", 0), ev(3, "meh", None)])
    assert len(again.inserted) == 1 and again.duplicates == 2
    stats = store.stats()
    assert stats.events_stored == 3 and stats.events_labelled == 2
    assert stats.events_duplicate == 2 and stats.events_invalid == {"not_json": 2}
    assert store.dictionary is not None and store.dictionary.words["movie"].updates == 2  # not 4
    assert stats.dictionary_updates == 2
    within = store.append_batch([ev(9), ev(9)])  # the same id twice in one batch: stored once
    assert len(within.inserted) == 1 and within.duplicates == 1


def test_dictionary_survives_reopen(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([ev(i) for i in range(5)])
    assert store.dictionary is not None
    expected = store.dictionary.to_dict()
    store.close()
    reopened = backend.open()
    assert reopened.dictionary is not None and reopened.dictionary.to_dict() == expected


def test_two_writers_on_one_buffer_stay_exact(backend: Backend) -> None:
    """Two processes' stores share one buffer: each re-reads touched words inside its transaction."""
    a, b = backend.open(), backend.open()
    a.append_batch([ev(1, "fine", 4)])
    b.append_batch([ev(2, "fine", 0)])
    a.append_batch([ev(3, "fine", 2)])
    expected = 0.7 * (0.7 * 2 + 0.3 * -2) + 0.3 * 0
    assert a.dictionary is not None
    assert a.dictionary.words["fine"].score == pytest.approx(expected)
    assert a.dictionary.words["fine"].updates == 3


def test_the_committed_dictionary_holds_other_writers_words(backend: Backend) -> None:
    """What a snapshot shows: every committed row, also the words only another writer (a replica) learnt."""
    a, b = backend.open(), backend.open()
    a.append_batch([ev(1, "splendid", 4)])
    b.append_batch([ev(2, "dreadful", 0)])
    assert b.dictionary is not None and "splendid" not in b.dictionary.words  # not touched by b's batches
    committed = b.committed_dictionary()
    assert {"splendid", "dreadful"} <= committed.words.keys()


def test_marks_sample_export_and_split(backend: Backend) -> None:
    store = backend.open(holdout_share=0.5)
    store.append_batch([ev(i, label=i % 5, domain="a" if i % 2 else "b") for i in range(40)])
    store.set_mark("retrain")
    assert store.count_since("retrain") == 0 and store.mark_seq("retrain") == store.label_position()
    store.append_batch([ev(100), ev(101, label=None)])
    assert store.count_since("retrain") == 1
    assert store.stats().events_awaiting_label == 1 and store.label_counts() == (1, 0)
    sample = store.sample(5, label=3, seed=1)
    assert len(sample) == 5 and all(s.event.label == 3 for s in sample)
    assert [s.seq for s in store.sample(5, label=3, seed=1)] == [s.seq for s in sample]
    assert all(s.event.domain == "a" for s in store.sample(100, domain="a"))
    splits = {s.split for s in store.iter_events()}
    assert splits == {"train", "holdout"}
    assert [e.event.event_id for e in store.iter_labelled(since=store.mark_seq("retrain"))] == ["id100"]
    out = io.StringIO()
    assert store.export_jsonl(out) == 42
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["event_id"] == "id0" and first["label"] == "very_negative"


def test_retention_keeps_ids_as_duplicates(backend: Backend) -> None:
    store = backend.open(retention_days=1)
    store.append_batch([ev(1)])
    assert store.apply_retention(now_ms=10**13) == 1
    assert store.stats().events_stored == 0
    assert store.append_batch([ev(1)]).duplicates == 1


def test_label_set_change_is_refused(backend: Backend) -> None:
    backend.open().close()
    with pytest.raises(ConfigError, match="written with labels"):
        backend.open(labels=["neg", "pos"])


def test_a_reader_sees_counts_grow_while_a_writer_writes(backend: Backend) -> None:
    store = backend.open()
    store.append_batch([ev(0, "lovely day", 4)])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.append_batch([ev(1000 + i)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = backend.reader()
        counts = [reader.stats().events_stored for _ in range(20)]
        row, pending = reader.word("lovely")
        words = reader.words()
        reader.close()
    finally:
        stop.set()
        thread.join()
    assert counts == sorted(counts)
    assert row is not None and row.updates == 1 and pending is None and "lovely" in words


def test_seed_lexicon_once(backend: Backend) -> None:
    store = backend.open()
    assert store.seed_dictionary({"good": 1.5, "bad": -1.5}, "test") == 2
    assert store.seed_dictionary({"good": 1.5}, "test") == 0
    store.append_batch([ev(1, "good", 0)])
    assert store.dictionary is not None
    assert store.dictionary.words["good"].score == pytest.approx(0.7 * 1.5 + 0.3 * -2)
    assert store.committed_dictionary().words["good"].updates == 1
