"""Exactly one retrain leader among replicas, on the real locks: flock beside a SQLite buffer, a session
advisory lock on the real PostgreSQL server; and the controller's part (a follower neither decides nor
retrains, a leader that loses the lock stops its worker at once)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from sentiloop.daemon.leadership import FileLeadership, PostgresLeadership
from tests.daemon.test_retrain_controller import controller
from tests.postgres import PostgresSchema


class Switch:
    """A Leadership whose answer the test sets."""

    def __init__(self, leads: bool) -> None:
        self.answer = leads

    def leads(self) -> bool:
        return self.answer

    def release(self) -> None:
        self.answer = False


def test_one_flock_holder_at_a_time_and_release_hands_it_over(tmp_path: Path) -> None:
    first, second = FileLeadership(tmp_path / "leader.lock"), FileLeadership(tmp_path / "leader.lock")
    assert first.leads() and not second.leads()
    assert first.leads()  # holding it is idempotent
    first.release()
    assert second.leads() and not first.leads()
    second.release()


@pytest.mark.postgres
def test_one_postgres_leader_and_leadership_moves_when_its_session_dies(schema: PostgresSchema) -> None:
    replicas = [PostgresLeadership(schema.dialect()) for _ in range(3)]
    assert [r.leads() for r in replicas] == [True, False, False]
    with psycopg.connect(schema.url, autocommit=True) as admin:  # the leader's host dies: its session ends
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = (%s::bigint & 4294967295)::oid"
                      " AND granted", (replicas[0].key,))
    assert not replicas[0].leads()  # it notices, and must stop leading
    assert [r.leads() for r in replicas[1:]] == [True, False]
    replicas[1].release()
    assert replicas[2].leads() and not replicas[0].leads()
    for replica in replicas:
        replica.release()


def test_a_follower_neither_decides_nor_accepts_retrains(tmp_path: Path) -> None:
    c, monitor, spawn, _, _ = controller(tmp_path, drift_settle_events=0)
    c.leadership = Switch(False)
    monitor.fire()
    c.tick()
    assert not spawn.workers and c.status()["leader"] is False
    assert c.metrics.retrain_leader._value.get() == 0
    status, answer = c.request("by hand")
    assert status == 409 and "not the retrain leader" in answer["why"]
    c.leadership.answer = True  # the leader died: this replica takes over and acts on the latched signal
    c.tick()
    assert len(spawn.workers) == 1 and c.metrics.retrain_leader._value.get() == 1


def test_a_leader_that_loses_the_lock_stops_its_retrain_at_once(tmp_path: Path) -> None:
    c, monitor, spawn, _, _ = controller(tmp_path, drift_settle_events=0)
    switch = Switch(True)
    c.leadership = switch
    monitor.fire()
    c.tick()
    (worker,) = spawn.workers
    switch.answer = False
    c.tick()
    assert worker.returncode == -15  # terminated
    c.tick()
    assert c.worker is None and c.outcomes[-1].status.value == "failed"
