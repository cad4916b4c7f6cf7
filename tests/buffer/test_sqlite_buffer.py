"""What is particular to the SQLite backend: its failure modes, error classification and file checks.
What every backend must do is in test_contract.py."""

import sqlite3
from pathlib import Path

import pytest

from sentiloop.buffer import SourcedEvent, SQLiteBufferReader, SQLiteBufferStore
from sentiloop.events import FeedbackEvent
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.buffer.conftest import LABELS
from tests.buffer.test_contract import ev


def make_store(path: Path, min_count: int = 1, **kw) -> SQLiteBufferStore:  # type: ignore[no-untyped-def]
    return SQLiteBufferStore(path / "b.sqlite3", LABELS, WordSentimentModel([-2, -1, 0, 1, 2], min_count=min_count), **kw)


def test_failed_transaction_leaves_no_trace(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append_batch([ev(1)])
    before = store.dictionary.to_dict()
    broken = SourcedEvent(FeedbackEvent("x", "good", 4, None, None, None, None, 1), "t", 0, 9)
    with pytest.raises(sqlite3.ProgrammingError):  # a value SQLite cannot bind, mid-transaction
        store.append_batch([ev(2), broken], {"bad": object()})  # type: ignore[dict-item]
    assert store.dictionary.to_dict() == before
    assert store.stats().events_stored == 1


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
        SQLiteBufferReader(path, LABELS)
