"""What only the PostgreSQL buffer has to prove, on the real server: versioned migrations, writers that
never deadlock and stay exact, and outages (a killed connection, a held lock, a refused value) that
lose nothing. The shared contract is test_contract.py / test_labels.py."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest

from sentiloop.buffer import SourcedEvent
from sentiloop.buffer.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresBufferStore, storage_failure
from sentiloop.errors import BufferFileError, StorageUnavailable
from sentiloop.events import FeedbackEvent
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.buffer.conftest import LABELS, dictionary
from tests.postgres import PostgresSchema

pytestmark = pytest.mark.postgres


def open_store(schema: PostgresSchema, **dialect: float) -> PostgresBufferStore:
    return PostgresBufferStore(schema.dialect(**dialect), LABELS, dictionary())


def ev(name: str, text: str = "good movie", label: int | None = 4) -> SourcedEvent:
    return SourcedEvent(FeedbackEvent(name, text, label, None, None, "tweets", "en", 1000), "t", 0, 0)


def raw_connection(schema: PostgresSchema) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(schema.url, autocommit=True)
    conn.execute(f"SET search_path TO {schema.name}")
    return conn


def test_schema_is_versioned_and_a_version_1_schema_is_migrated_in_place(schema: PostgresSchema) -> None:
    with raw_connection(schema) as conn:  # a buffer as the base schema left it, with one labelled event
        for statement in MIGRATIONS[1].split(";\n"):
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute('INSERT INTO events (event_id, topic, partition, "offset", text, label, event_ts_ms, ingested_ms, split)'
                     " VALUES ('old', 't', 0, 0, 'good film', 4, 1, 1, 'train')")
    store = open_store(schema)
    with raw_connection(schema) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert [e.event.event_id for e in store.iter_labelled()] == ["old"] and store.label_position() == 1
    store.append_batch([ev("new")])
    assert [e.label_seq for e in store.iter_labelled()] == [1, 2]
    store.close()


def test_a_newer_schema_is_refused_with_what_to_do(schema: PostgresSchema) -> None:
    open_store(schema).close()
    with raw_connection(schema) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(BufferFileError, match="newer than this sentiloop's.*upgrade sentiloop"):
        open_store(schema)


def test_replicas_writing_the_same_words_at_once_never_deadlock_and_stay_exact(schema: PostgresSchema) -> None:
    """Four writers, each with its own connection, hammer the same few words (and re-send each other's
    events): every event is stored once, and the dictionary equals one pass in commit order."""
    words = ["good", "bad", "film", "plot", "cast", "dull", "fine"]
    rng = random.Random(5)
    events = [ev(f"e{i}", " ".join(rng.sample(words, 4)), rng.randrange(5)) for i in range(1200)]
    stores = [open_store(schema) for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: PostgresBufferStore, seed: int) -> None:
        order = random.Random(seed)
        try:
            for _ in range(40):
                store.append_batch(order.sample(events, 30))
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(store, i)) for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for store in stores[1:]:
        store.close()
    store = stores[0]
    applied = list(store.iter_labelled())
    stats = store.stats()
    assert stats.events_stored == len(applied) == len({e.event.event_id for e in applied})
    assert stats.events_stored + stats.events_duplicate == 4 * 40 * 30
    assert stats.dictionary_updates == stats.events_stored
    single_pass = WordSentimentModel([-2, -1, 0, 1, 2], min_count=1).fit([e.event.text for e in applied],
                                                                          [e.event.label or 0 for e in applied])
    store.reload_dictionary()
    assert store.dictionary is not None
    assert store.dictionary.words.keys() == single_pass.words.keys()
    for word, entry in single_pass.words.items():
        assert store.dictionary.words[word].updates == entry.updates
        assert store.dictionary.words[word].score == pytest.approx(entry.score, abs=1e-12)
    store.close()


def test_a_killed_connection_pauses_the_write_and_the_next_one_reconnects(schema: PostgresSchema) -> None:
    store = open_store(schema)
    store.append_batch([ev("a", "fine plot", 4)])
    with raw_connection(schema) as admin:
        killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                               (f"sentiloop {schema.name}",)).fetchall()
    assert killed
    with pytest.raises(StorageUnavailable) as info:
        store.append_batch([ev("b", "fine plot", 0)])
    assert info.value.kind == "connection_lost"
    result = store.append_batch([ev("b", "fine plot", 0)])  # the consumer's retry: a fresh connection
    assert len(result.inserted) == 1
    assert store.stats().events_stored == 2 and store.stats().dictionary_updates == 2
    assert store.dictionary is not None and store.dictionary.words["plot"].updates == 2
    store.close()


def test_a_writer_holding_the_lock_past_lock_timeout_is_locked_not_lost(schema: PostgresSchema) -> None:
    store = open_store(schema, lock_timeout_s=0.3)
    holder = raw_connection(schema)
    holder.execute("BEGIN")
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (schema.dialect().lock_key,))
    with pytest.raises(StorageUnavailable) as info:
        store.append_batch([ev("a")])
    assert info.value.kind == "locked"
    holder.execute("ROLLBACK")
    holder.close()
    assert len(store.append_batch([ev("a")]).inserted) == 1
    store.close()


def test_a_value_postgres_refuses_is_about_the_record_and_rolls_back_the_batch(schema: PostgresSchema) -> None:
    """PostgreSQL text cannot hold NUL: the consumer must see a record error (it bisects to the DLQ),
    not a storage outage, and the good event of the failed batch must not have taught the dictionary."""
    store = open_store(schema)
    with pytest.raises(Exception) as info:
        store.append_batch([ev("good", "fine plot", 4), ev("poison", "fine\x00plot", 0)])
    assert storage_failure(info.value) is None
    assert store.stats().events_stored == 0
    assert store.dictionary is not None and "plot" not in store.dictionary.words
    store.append_batch([ev("good", "fine plot", 4)])
    assert store.dictionary.words["plot"].updates == 1
    store.close()
