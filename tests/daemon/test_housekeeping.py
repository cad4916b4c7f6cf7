"""Housekeeping components on a real SQLite buffer and real snapshot files, with a fake clock."""

from __future__ import annotations

import time
from pathlib import Path

from sentiloop.config import BufferConfig, DictionaryConfig
from sentiloop.daemon.housekeeping import RETENTION_EVERY_S, RetentionSweep, SnapshotCadence
from sentiloop.models.snapshots import DictionarySnapshots
from sentiloop.monitoring.metrics import IngestMetrics
from tests.buffer.test_contract import ev
from tests.buffer.test_sqlite_buffer import make_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_snapshots_follow_the_cadence_and_a_failure_is_counted_and_retried_later(tmp_path: Path) -> None:
    store, clock, metrics = make_store(tmp_path), Clock(), IngestMetrics()
    blocked = tmp_path / "snapshots"
    blocked.write_text("a file where the snapshot directory should be")
    cadence = SnapshotCadence(store, DictionarySnapshots(blocked), DictionaryConfig(snapshot_every=2), BufferConfig(retry_max_s=30),
                              metrics, clock)
    store.append_batch([ev(1), ev(2)])
    cadence.after_batch(1)
    assert cadence.since_snapshot == 1  # below the cadence: nothing written
    cadence.after_batch(1)  # due, but the directory cannot be created
    assert metrics.snapshot_errors._value.get() == 1 and cadence.since_snapshot == 2
    blocked.unlink()
    cadence.after_batch(1)
    assert metrics.snapshot_errors._value.get() == 1 and not blocked.exists()  # still inside the retry pause
    clock.now += 31
    cadence.after_batch(0)
    assert blocked.is_dir() and cadence.since_snapshot == 0
    cadence.flush()  # nothing changed since: no shutdown snapshot
    assert DictionarySnapshots(blocked).versions() == [1]


def test_retention_runs_at_most_hourly_and_only_when_configured(tmp_path: Path) -> None:
    days = 1e-6  # 86 ms: the two events are old enough after a short wait
    store, clock = make_store(tmp_path, retention_days=days), Clock()
    store.append_batch([ev(1), ev(2)])
    sweep = RetentionSweep(store, BufferConfig(retention_days=None), clock)
    clock.now += RETENTION_EVERY_S + 1
    time.sleep(0.2)
    assert sweep.after_batch() == 0  # not configured
    sweep.apply(BufferConfig(retention_days=days))
    assert sweep.after_batch() == 2
    store.append_batch([ev(3)])
    assert sweep.after_batch() == 0  # within the hour
