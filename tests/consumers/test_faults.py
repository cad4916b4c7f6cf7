"""Fault injection on the real thing: a real broker, daemon subprocesses, real filesystems.

Each test breaks something a production daemon meets — a full disk (a small tmpfs), a read-only
buffer (chattr +i), a locked database (another process holding the write lock), poison records in
the middle of a batch, a file that is not a database, a snapshot directory that cannot be written —
and checks the same three things: every valid event ends stored exactly once, the dictionary equals
a clean single pass, and the daemon never exits.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import buffer_stats, dictionary_rows, make_events, produce, wait_until
from tests.consumers.test_integration_ingest import assert_same_dictionary, clean_single_pass, http_get, metrics_port, read_topic

pytestmark = pytest.mark.integration


def readiness(daemon) -> dict:  # type: ignore[no-untyped-def]
    _status, body = http_get(metrics_port(daemon), "/readyz")
    return json.loads(body) if body else {}


def paused_kind(daemon) -> str | None:  # type: ignore[no-untyped-def]
    ingestion = readiness(daemon).get("ingestion") or {}
    return ingestion.get("kind") if ingestion.get("paused") else None


def metric(daemon, line_start: str) -> float | None:  # type: ignore[no-untyped-def]
    for line in http_get(metrics_port(daemon), "/metrics")[1].splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def all_stored(data: Path, n: int) -> bool:
    return buffer_stats(data)["events_stored"] == n


def assert_exact(data: Path, events: list[dict]) -> None:
    stats = buffer_stats(data)
    assert stats["events_stored"] == len(events)
    assert stats["dictionary_updates"] == len(events)  # each applied exactly once
    assert_same_dictionary(dictionary_rows(data), clean_single_pass(events))


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths appended here are made immutable by the test and made mutable again afterwards."""
    probe = tmp_path / "chattr-probe"
    probe.touch()
    try:
        _chattr("+i", probe)
        _chattr("-i", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"chattr +i is not available on this filesystem or user: {exc}")
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_disk_full_pauses_ingestion_then_resumes_by_itself(broker, topic, daemon_factory, small_tmpfs) -> None:  # type: ignore[no-untyped-def]
    """Reproduction: 20,000 events into a data_dir on a 1.5 MB tmpfs; 500 used to be lost for good."""
    events = make_events(20_000, prefix="full", seed=11)
    produce(broker.bootstrap, topic, events, partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=small_tmpfs, buffer={"retry_max_s": 1})
    wait_until(lambda: paused_kind(daemon) == "disk_full", timeout=120, what="ingestion to pause on a full disk")
    assert metric(daemon, 'sentiloop_ingest_paused{cause="buffer"}') == 1.0
    assert (metric(daemon, 'sentiloop_buffer_write_errors_total{kind="disk_full"}') or 0) >= 1
    assert http_get(metrics_port(daemon), "/readyz")[0] == 503
    stuck_at = buffer_stats(small_tmpfs)["events_stored"]
    assert 0 < stuck_at < 20_000
    time.sleep(3)  # several retries against the full disk
    assert daemon.alive()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)  # the operator frees space
    wait_until(lambda: all_stored(small_tmpfs, 20_000), timeout=180, what="all 20,000 events after space was freed")
    wait_until(lambda: http_get(metrics_port(daemon), "/readyz")[0] == 200, what="ready again")
    assert metric(daemon, 'sentiloop_ingest_paused{cause="buffer"}') == 0.0
    assert daemon.alive()
    assert_exact(small_tmpfs, events)
    assert buffer_stats(small_tmpfs)["events_duplicate"] == 0  # the held batch was stored once, not re-read
    assert daemon.stop() == 0


POISON: list[tuple[bytes, str]] = [
    (b'{"event_id":"p1","text":"hi","label":' + b"9" * 5000 + b"}", "number_out_of_range"),
    (b'{"event_id":"p2","text":"bad \\ud800 text","label":1}', "unstorable_text"),
    (b'{"event_id":"p3","text":"a NUL \\u0000 inside","label":1}', "unstorable_text"),
    (b'{"event_id":"p4","text":"said twice","label":1,"label":4}', "duplicate_key"),
    (b'{"event_id":"p5","text":"not a number","ts":NaN}', "not_json"),
    (b"[" * 3000, "nested_too_deep"),
    (b'{"event_id":"p6","text":"year one","ts":"0001-01-01T00:00:00+23:59"}', "bad_timestamp"),
    (b'{"event_id":"p7","text":"' + b"long " * 2000 + b'"}', "record_too_large"),
    (b'{"event_id":"\\udfff","text":"surrogate id"}', "unstorable_text"),
]


def test_poison_records_mid_batch_go_to_the_dlq_and_the_partition_moves_on(broker, topic, daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Reproductions: a 5,000-digit label and a lone surrogate used to crash-loop the daemon."""
    events = make_events(3000, prefix="pz", seed=5)
    stream: list[bytes | dict] = [*events[:1500], *(raw for raw, _ in POISON), *events[1500:]]
    produce(broker.bootstrap, topic, stream, partitions=1)
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, buffer={"max_record_bytes": 8192})
    wait_until(lambda: all_stored(data, 3000), timeout=120, what="the 3,000 valid events")
    dlq = read_topic(broker.bootstrap, f"{topic}.dlq", len(POISON))
    received = sorted((r.value, dict(r.headers)["sentiloop-reason"].decode()) for r in dlq)
    assert received == sorted(POISON)
    assert daemon.alive()
    assert_exact(data, events)
    assert sum(buffer_stats(data)["events_invalid"].values()) == len(POISON)
    assert daemon.stop() == 0
    again = daemon_factory(broker.bootstrap, topic, data_dir=data, name="restarted")  # no crash loop either
    wait_until(lambda: http_get(metrics_port(again), "/readyz")[0] == 200, what="the restarted daemon to be ready")
    assert again.alive() and buffer_stats(data)["events_stored"] == 3000


def test_read_only_buffer_pauses_then_resumes(broker, topic, daemon_factory, tmp_path, immutable) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    first, second = make_events(1000, prefix="ro-a", seed=1), make_events(1000, prefix="ro-b", seed=2)
    produce(broker.bootstrap, topic, first, partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, buffer={"retry_max_s": 1})
    wait_until(lambda: all_stored(data, 1000), what="events before the buffer turns read-only")
    files = [data / "buffer.sqlite3", data / "buffer.sqlite3-wal"]  # not -shm: it is memory-mapped
    immutable.extend(files)
    _chattr("+i", *files)
    produce(broker.bootstrap, topic, second, partitions=1)
    wait_until(lambda: paused_kind(daemon) in ("read_only", "io_error"), timeout=60, what="a pause on the read-only buffer")
    time.sleep(2)
    assert daemon.alive() and buffer_stats(data)["events_stored"] == 1000
    _chattr("-i", *files)
    wait_until(lambda: all_stored(data, 2000), timeout=60, what="the second 1,000 after the buffer is writable")
    wait_until(lambda: paused_kind(daemon) is None, what="ingestion to resume")
    assert daemon.alive()
    assert_exact(data, first + second)


def test_locked_buffer_pauses_and_a_stop_during_the_outage_loses_nothing(broker, topic, daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    first, second = make_events(500, prefix="lk-a", seed=3), make_events(1500, prefix="lk-b", seed=4)
    produce(broker.bootstrap, topic, first, partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, buffer={"lock_timeout_s": 0.5, "retry_max_s": 1})
    wait_until(lambda: all_stored(data, 500), what="events before the lock")
    holder = sqlite3.connect(data / "buffer.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock, far beyond the daemon's timeout
    try:
        produce(broker.bootstrap, topic, second, partitions=1)
        wait_until(lambda: paused_kind(daemon) == "locked", timeout=60, what="a pause on the locked buffer")
        assert daemon.alive()
        assert daemon.stop() == 0  # SIGTERM during the outage: commits only what was stored
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert buffer_stats(data)["events_stored"] == 500
    restarted = daemon_factory(broker.bootstrap, topic, data_dir=data, name="after-lock")
    wait_until(lambda: all_stored(data, 2000), timeout=90, what="every event after the restart")
    assert restarted.alive()
    assert_exact(data, first + second)


def test_lock_released_while_running_resumes_without_restart(broker, topic, daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    events = make_events(1500, prefix="lr", seed=6)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, buffer={"lock_timeout_s": 0.5, "retry_max_s": 1},
                            kafka={"partitions": 1})  # it creates the topic: one partition keeps the order
    wait_until(lambda: (data / "buffer.sqlite3").exists() and http_get(metrics_port(daemon), "/readyz")[0] == 200,
               what="the daemon to be ready")
    holder = sqlite3.connect(data / "buffer.sqlite3", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.0, lambda: (holder.execute("ROLLBACK"), holder.close()))
    release.start()
    try:
        produce(broker.bootstrap, topic, events, partitions=1)
        wait_until(lambda: paused_kind(daemon) == "locked", timeout=60, what="a pause on the locked buffer")
        wait_until(lambda: all_stored(data, 1500), timeout=90, what="every event once the lock is gone")
    finally:
        release.join()
    wait_until(lambda: paused_kind(daemon) is None, what="ingestion to resume")
    assert daemon.alive()
    assert_exact(data, events)


def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "buffer.sqlite3").write_bytes(b"this is a text file, not a sentiloop buffer\n" * 200)
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {data}\nkafka: {{bootstrap_servers: ['127.0.0.1:1']}}\nmetrics: {{enabled: false}}\n")
    for command in (["status"], ["run"]):
        done = subprocess.run([sys.executable, "-m", "sentiloop", *command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert str(data / "buffer.sqlite3") in done.stderr and "move it aside" in done.stderr, done.stderr


def test_unwritable_snapshot_directory_never_stops_ingestion(broker, topic, daemon_factory, tmp_path, immutable) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    snapshots = data / "dictionary"
    snapshots.mkdir(parents=True)
    immutable.append(snapshots)
    _chattr("+i", snapshots)  # nothing can be created in it
    events = make_events(1200, prefix="snap", seed=8)
    produce(broker.bootstrap, topic, events[:600], partitions=1)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, dictionary={"snapshot_every": 100}, buffer={"retry_max_s": 1})
    wait_until(lambda: all_stored(data, 600), what="events while snapshots fail")
    wait_until(lambda: (metric(daemon, "sentiloop_snapshot_errors_total") or 0) >= 1, what="a counted snapshot failure")
    assert daemon.alive() and http_get(metrics_port(daemon), "/readyz")[0] == 200
    _chattr("-i", snapshots)
    time.sleep(1.5)  # past the retry delay
    produce(broker.bootstrap, topic, events[600:], partitions=1)
    wait_until(lambda: all_stored(data, 1200), what="the rest of the events")
    wait_until(lambda: (snapshots / "word_sentiment_dict.json").exists(), what="a snapshot once the directory is writable")
    assert daemon.alive()
    assert_exact(data, events)
    daemon.signal(signal.SIGTERM)
