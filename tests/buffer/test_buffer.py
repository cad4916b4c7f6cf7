import io
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.buffer.sqlite import open_readonly, read_stats
from sentiloop.config import Settings
from sentiloop.errors import ConfigError
from sentiloop.events import FeedbackEvent
from sentiloop.models.word_sentiment import WordSentimentModel

LABELS = Settings().label_names


def ev(i: int, text: str = "good movie", label: int | None = 4, domain: str = "tweets") -> SourcedEvent:
    event = FeedbackEvent(f"id{i}", text, label, None, None, domain, "en", 1000 + i)
    return SourcedEvent(event, "t", 0, i)


def make_store(path: Path, min_count: int = 1, **kw) -> SQLiteBufferStore:  # type: ignore[no-untyped-def]
    return SQLiteBufferStore(path / "b.sqlite3", LABELS, WordSentimentModel([-2, -1, 0, 1, 2], min_count=min_count), **kw)


def test_append_is_idempotent_and_updates_dictionary_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.append_batch([ev(1), ev(2, "bad movie", 0)], {"not_json": 2})
    assert len(first.inserted) == 2 and first.duplicates == 0
    again = store.append_batch([ev(1), ev(2, "bad movie", 0), ev(3, "meh", None)])
    assert len(again.inserted) == 1 and again.duplicates == 2
    stats = store.stats()
    assert stats.events_stored == 3 and stats.events_labelled == 2
    assert stats.events_duplicate == 2 and stats.events_invalid == {"not_json": 2}
    assert store.dictionary.words["movie"].updates == 2  # not 4
    assert stats.dictionary_updates == 2
    store.close()


def test_dictionary_survives_reopen(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append_batch([ev(i) for i in range(5)])
    expected = store.dictionary.to_dict()
    store.close()
    reopened = make_store(tmp_path)
    assert reopened.dictionary.to_dict() == expected


def test_failed_transaction_leaves_no_trace(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append_batch([ev(1)])
    before = store.dictionary.to_dict()
    broken = SourcedEvent(FeedbackEvent("x", "good", 4, None, None, None, None, 1), "t", 0, 9)
    with pytest.raises(sqlite3.ProgrammingError):  # a value SQLite cannot bind, mid-transaction
        store.append_batch([ev(2), broken], {"bad": object()})  # type: ignore[dict-item]
    assert store.dictionary.to_dict() == before
    assert store.stats().events_stored == 1


def test_two_writers_on_one_file_stay_exact(tmp_path: Path) -> None:
    """Two processes' stores share one file: each re-reads touched words inside its transaction."""
    a, b = make_store(tmp_path), make_store(tmp_path)
    a.append_batch([ev(1, "fine", 4)])
    b.append_batch([ev(2, "fine", 0)])
    a.append_batch([ev(3, "fine", 2)])
    expected = 0.7 * (0.7 * 2 + 0.3 * -2) + 0.3 * 0
    assert a.dictionary.words["fine"].score == pytest.approx(expected)
    assert a.dictionary.words["fine"].updates == 3


def test_marks_sample_export_and_split(tmp_path: Path) -> None:
    store = make_store(tmp_path, holdout_share=0.5)
    store.append_batch([ev(i, label=i % 5, domain="a" if i % 2 else "b") for i in range(40)])
    store.set_mark("retrain")
    assert store.count_since("retrain") == 0
    store.append_batch([ev(100), ev(101, label=None)])
    assert store.count_since("retrain") == 1
    assert store.stats().events_awaiting_label == 1
    sample = store.sample(5, label=3, seed=1)
    assert len(sample) == 5 and all(s.event.label == 3 for s in sample)
    assert [s.seq for s in store.sample(5, label=3, seed=1)] == [s.seq for s in sample]
    assert all(s.event.domain == "a" for s in store.sample(100, domain="a"))
    splits = {s.split for s in store.iter_events()}
    assert splits == {"train", "holdout"}
    out = io.StringIO()
    assert store.export_jsonl(out) == 42
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["event_id"] == "id0" and first["label"] == "very_negative"


def test_retention_keeps_ids_as_duplicates(tmp_path: Path) -> None:
    store = make_store(tmp_path, retention_days=1)
    store.append_batch([ev(1)])
    assert store.apply_retention(now_ms=10**13) == 1
    assert store.stats().events_stored == 0
    assert store.append_batch([ev(1)]).duplicates == 1


def test_label_set_change_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path).close()
    with pytest.raises(ConfigError, match="written with labels"):
        SQLiteBufferStore(tmp_path / "b.sqlite3", ["neg", "pos"])


def test_readonly_stats_while_writing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.append_batch([ev(1000 + i)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        conn = open_readonly(tmp_path / "b.sqlite3")
        counts = [read_stats(conn, LABELS).events_stored for _ in range(20)]
        conn.close()
    finally:
        stop.set()
        thread.join()
    assert counts == sorted(counts)


def test_seed_lexicon_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.seed_dictionary({"good": 1.5, "bad": -1.5}, "test") == 2
    assert store.seed_dictionary({"good": 1.5}, "test") == 0
    store.append_batch([ev(1, "good", 0)])
    assert store.dictionary.words["good"].score == pytest.approx(0.7 * 1.5 + 0.3 * -2)


def test_a_locked_buffer_is_unavailable_and_leaves_the_dictionary_exact(tmp_path: Path) -> None:
    import sqlite3

    from sentiloop.errors import StorageUnavailable

    store = make_store(tmp_path, lock_timeout_s=0.2)
    store.append_batch([ev(1, "good movie", 4)])
    holder = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageUnavailable) as info:
        store.append_batch([ev(2, "good plot", 4)])
    assert info.value.kind == "locked"
    holder.execute("ROLLBACK")
    holder.close()
    result = store.append_batch([ev(2, "good plot", 4)])  # the same batch again, after the outage
    assert len(result.inserted) == 1
    assert store.dictionary.words["good"].updates == 2  # the failed attempt left nothing behind
    assert store.committed_dictionary().words["good"].updates == 2
    store.close()


def test_a_record_level_failure_rolls_back_and_is_re_raised_unchanged(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append_batch([ev(1, "good movie", 4)])
    # What the validator now refuses (a lone surrogate) is the kind of value that fails only at bind time.
    broken = SourcedEvent(FeedbackEvent("bad", "good film \ud800", 4, None, None, "d", "en", 5), "t", 0, 9)
    with pytest.raises(UnicodeEncodeError):
        store.append_batch([ev(2, "good story", 4), broken])
    assert store.stats().events_stored == 1  # the whole transaction was rolled back
    assert store.dictionary.words["good"].updates == 1
    assert store.append_batch([ev(2, "good story", 4)]).inserted
    assert store.dictionary.words["good"].updates == 2
    store.close()


def test_storage_failure_classification() -> None:
    import errno
    import sqlite3

    from sentiloop.buffer.sqlite import storage_failure

    assert storage_failure(OSError(errno.ENOSPC, "No space left on device")).kind == "disk_full"
    assert storage_failure(OSError(errno.EROFS, "Read-only file system")).kind == "read_only"
    assert storage_failure(sqlite3.OperationalError("something odd")).kind == "sqlite_error"
    assert storage_failure(sqlite3.IntegrityError("constraint")) is None  # about a record, not the store
    assert storage_failure(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")) is None


def test_a_file_that_is_not_a_database_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    from sentiloop.errors import BufferFileError

    path = tmp_path / "b.sqlite3"
    path.write_bytes(b"definitely not SQLite " * 100)
    with pytest.raises(BufferFileError, match="move it aside") as info:
        make_store(tmp_path)
    assert str(path) in str(info.value)
    with pytest.raises(BufferFileError, match="is not a usable sentiloop buffer"):
        open_readonly(path)
