"""The daemon on a PostgreSQL buffer, on the real thing: bundled broker, daemon subprocesses with their
own data_dirs, the real server at 127.0.0.1:5432, `sentiloop status` reading it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sentiloop.buffer.sql_store import SQLBufferReader
from sentiloop.config import Settings
from sentiloop.errors import NotInitialised
from sentiloop.models.word_sentiment import WordSentimentModel
from tests.conftest import make_events, produce, wait_until
from tests.consumers.test_integration_ingest import assert_same_dictionary, clean_single_pass
from tests.postgres import PostgresSchema

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def buffer_config(schema: PostgresSchema) -> dict[str, str]:
    return {"url": schema.url, "postgres_schema": schema.name}


def pg_stats(schema: PostgresSchema) -> dict[str, int]:
    try:
        reader = SQLBufferReader(schema.dialect(), Settings().label_names)
    except NotInitialised:
        return {"events_stored": 0}
    try:
        stats = reader.stats()
        return {"events_stored": stats.events_stored, "events_labelled": stats.events_labelled,
                "dictionary_updates": stats.dictionary_updates, "events_duplicate": stats.events_duplicate}
    except NotInitialised:
        return {"events_stored": 0}
    finally:
        reader.close()


def pg_dictionary(schema: PostgresSchema) -> dict[str, tuple[float, int]]:
    reader = SQLBufferReader(schema.dialect(), Settings().label_names)
    try:
        return {w: (e.score, e.updates) for w, e in reader.words().items()}
    finally:
        reader.close()


def test_sigkill_mid_stream_then_restart_on_postgres_equals_clean_pass(broker, topic, daemon_factory, schema, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = make_events(12_000, seed=7)
    produce(broker.bootstrap, topic, events, partitions=1)  # one partition: a single, well-defined order
    daemon = daemon_factory(broker.bootstrap, topic, kafka={"max_poll_records": 200}, buffer=buffer_config(schema))
    wait_until(lambda: pg_stats(schema)["events_stored"] >= 2000, timeout=90, what="a part of the stream")
    daemon.kill()  # SIGKILL: no chance to commit or flush
    assert pg_stats(schema)["events_stored"] < 12_000, "the stream finished before the kill; make it longer"

    restarted = daemon_factory(broker.bootstrap, topic, name="restarted", buffer=buffer_config(schema))
    wait_until(lambda: pg_stats(schema)["events_stored"] == 12_000, timeout=120, what="all events after restart")
    stats = pg_stats(schema)
    assert stats["events_labelled"] == stats["dictionary_updates"] == 12_000  # applied exactly once each
    assert_same_dictionary(pg_dictionary(schema), clean_single_pass(events))
    assert not (tmp_path / "data" / "buffer.sqlite3").exists()  # nothing went to a local file

    restarted.stop()  # `sentiloop status` then reads the PostgreSQL buffer itself
    shown = subprocess.run([sys.executable, "-m", "sentiloop", "status", "--json", "--config", str(restarted.config_path)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["events_stored"] == 12_000


def test_two_replicas_with_their_own_data_dirs_share_one_buffer_through_a_sigkill(broker, topic, daemon_factory, schema, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each event is stored once and taught once; the dictionary equals one pass in commit order."""
    produce(broker.bootstrap, topic, make_events(6000, prefix="p", seed=2), partitions=3)
    first = daemon_factory(broker.bootstrap, topic, name="one", data_dir=tmp_path / "one", kafka={"max_poll_records": 100},
                           buffer=buffer_config(schema))
    second = daemon_factory(broker.bootstrap, topic, name="two", data_dir=tmp_path / "two", kafka={"max_poll_records": 100},
                            buffer=buffer_config(schema))
    wait_until(lambda: pg_stats(schema)["events_stored"] >= 1500, timeout=90, what="both replicas under way")
    first.kill()
    produce(broker.bootstrap, topic, make_events(2000, prefix="q", seed=5), partitions=3)
    wait_until(lambda: pg_stats(schema)["events_stored"] == 8000, timeout=120, what="the survivor to finish the stream")
    assert second.alive()
    stats = pg_stats(schema)
    assert stats["events_labelled"] == stats["dictionary_updates"] == 8000

    from sentiloop.buffer.postgres import PostgresBufferStore

    store = PostgresBufferStore(schema.dialect(), Settings().label_names)
    applied = list(store.iter_labelled())  # commit order: the order the dictionary learnt them
    store.close()
    single_pass = WordSentimentModel([-2, -1, 0, 1, 2]).fit([e.event.text for e in applied], [e.event.label or 0 for e in applied])
    assert_same_dictionary(pg_dictionary(schema), {w: (e.score, e.updates) for w, e in single_pass.words.items()})
