"""Three replicas on several "hosts" (separate processes, separate data_dirs, nothing shared on disk)
meeting in a real PostgreSQL buffer and a real MLflow tracking server: one replica SIGKILLed mid-stream,
the leader SIGKILLed during a retrain. Every event is stored once, the dictionary equals one pass in
commit order, one retrain runs at a time, and every replica ends serving the same champion."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sentiloop.buffer import SourcedEvent
from sentiloop.buffer.postgres import PostgresBufferStore
from sentiloop.config import Settings
from sentiloop.consumers.broker import free_port
from sentiloop.events import FeedbackEvent
from sentiloop.models.word_sentiment import WordSentimentModel
from sentiloop.monitoring.tracking import Tracker
from sentiloop.retrainers.data import RETRAIN_MARK
from tests.conftest import produce, wait_until
from tests.consumers.test_integration_ingest import assert_same_dictionary, metrics_port
from tests.consumers.test_integration_postgres import pg_dictionary, pg_stats
from tests.daemon.test_integration_continual import events, metric, worker_pids
from tests.postgres import PostgresSchema
from tests.retrainers.test_retrain_cycle import NEW, OLD, sentences, word_champion

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with its own store: replicas reach it over HTTP only."""
    port = free_port()
    root = tmp_path / "mlflow-server"
    root.mkdir()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until the fixture ends
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
                                "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=60, what="the MLflow server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def overrides(schema: PostgresSchema, mlflow_url: str) -> dict[str, Any]:
    return {
        "buffer": {"url": schema.url, "postgres_schema": schema.name, "holdout_share": 0.3},
        "mlflow": {"tracking_uri": mlflow_url, "follow_interval_s": 1},
        "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
        "kafka": {"max_poll_records": 100},
        "retrain": {"volume_threshold": 8600, "min_new_events": 10, "max_iterations": 2,
                    "policy": {"warmup_events": 0, "cooldown_s": 0, "hysteresis": 1}, "gate": {"min_holdout": 20},
                    "drift": {"enabled": False}},
    }


def bootstrap_champion(tmp_path: Path, config: dict[str, Any]) -> None:
    """The first champion, trained elsewhere and registered; the old-domain events it knows in the buffer."""
    settings = Settings.model_validate({"data_dir": str(tmp_path / "trainer"), **config})
    _, path = word_champion(settings)
    tracker = Tracker(settings)
    with tracker.run("bootstrap", {}):
        tracker.register_ensemble(path, "champion")
    store = PostgresBufferStore.for_settings(settings)
    old_texts, old_labels = sentences(OLD, 300, 2)
    store.append_batch([SourcedEvent(FeedbackEvent(f"old{i}", t, y, None, None, "old", "en", 0), "t", 0, i)
                        for i, (t, y) in enumerate(zip(old_texts, old_labels))])
    store.set_mark(RETRAIN_MARK)
    store.close()


def log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def retrain_spans(log: str, killed_at: float | None) -> list[tuple[float, float]]:
    """(start, end) of each retrain in a daemon log; one still running when the daemon was killed ends then."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for line in log.splitlines():
        if "retrain started (pid" in line:
            start = log_time(line)
        elif "retrain finished" in line and start is not None:
            spans.append((start, log_time(line)))
            start = None
    if start is not None:
        assert killed_at is not None, "a retrain never finished in a replica that was not killed"
        spans.append((start, killed_at))
    return spans


def test_three_replicas_one_leader_through_sigkills_serve_one_champion(broker, topic, daemon_factory, schema, mlflow_server,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:
    config = overrides(schema, mlflow_server)
    bootstrap_champion(tmp_path, config)
    replicas = {name: daemon_factory(broker.bootstrap, topic, name=name, data_dir=tmp_path / name, **config) for name in "abc"}
    ports = {name: metrics_port(d) for name, d in replicas.items()}

    def leaders() -> list[str]:
        return [n for n, d in replicas.items() if d.alive() and metric(ports[n], "sentiloop_retrain_leader") == 1.0]

    def serving(registry_version: int) -> bool:
        return all(metric(ports[n], "sentiloop_champion_registry_version") == registry_version for n, d in replicas.items() if d.alive())

    wait_until(lambda: serving(1), timeout=90, what="every replica to serve the registered champion")
    wait_until(lambda: len(leaders()) == 1, timeout=30, what="one leader")
    (leader,) = leaders()
    follower = next(n for n in replicas if n != leader)

    produce(broker.bootstrap, topic, events(OLD, 8000, 11, "s"), partitions=3)
    wait_until(lambda: pg_stats(schema)["events_stored"] >= 1000, timeout=90, interval=0.05, what="the stream under way")
    replicas[follower].kill()  # a replica SIGKILLed mid-stream: its partitions move to the others
    assert pg_stats(schema)["events_stored"] < 8300, "the stream finished before the kill; make it longer"
    wait_until(lambda: pg_stats(schema)["events_stored"] == 8300, timeout=120, what="the survivors to finish the stream")
    replicas[follower] = daemon_factory(broker.bootstrap, topic, name=f"{follower}-again", data_dir=tmp_path / follower, **config)
    ports[follower] = metrics_port(replicas[follower])
    assert leaders() == [leader]

    produce(broker.bootstrap, topic, events(NEW, 1500, 3, "n"), partitions=3)  # the volume trigger trips on the leader
    wait_until(lambda: metric(ports[leader], "sentiloop_retrain_running") == 1.0, timeout=90, what="the leader's retrain")
    before = set(worker_pids())
    assert before, "the leader's worker process"
    replicas[leader].kill()  # the leader SIGKILLed during its retrain
    killed_at = time.time()
    wait_until(lambda: not set(worker_pids()) & before, timeout=5, interval=0.05, what="its worker to die with it")
    worker_gone_at = time.time()
    wait_until(lambda: len(leaders()) == 1, timeout=60, what="leadership to move")
    (new_leader,) = leaders()
    assert new_leader != leader
    replicas[leader] = daemon_factory(broker.bootstrap, topic, name=f"{leader}-again", data_dir=tmp_path / leader, **config)
    ports[leader] = metrics_port(replicas[leader])

    wait_until(lambda: serving(2), timeout=240, what="the new leader's promotion to reach every replica")
    assert all(d.alive() for d in replicas.values()) and leaders() == [new_leader]

    # The leader's partitions come back to the group after its session times out: what it had read
    # but not committed is read again by their new owner (the promotion may well be quicker).
    wait_until(lambda: pg_stats(schema)["events_stored"] == 9800, timeout=120, what="every event stored after the kills")
    stats = pg_stats(schema)
    assert stats["events_stored"] == stats["events_labelled"] == 9800
    assert stats["dictionary_updates"] == 9500  # the stream's events, each once (the bootstrap's 300 were stored without it)
    store = PostgresBufferStore(schema.dialect(), Settings().label_names)
    applied = [e for e in store.iter_labelled() if not e.event.event_id.startswith("old")]
    store.close()
    single_pass = WordSentimentModel([-2, -1, 0, 1, 2]).fit([e.event.text for e in applied], [e.event.label or 0 for e in applied])
    assert_same_dictionary(pg_dictionary(schema), {w: (e.score, e.updates) for w, e in single_pass.words.items()})

    logs = {path.stem: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    spans = sorted(span for name, text in logs.items() for span in retrain_spans(text, killed_at if name == leader else None))
    assert len(spans) >= 2, spans
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), f"retrains overlapped: {spans}"
    assert worker_gone_at - killed_at < 5
    announced = re.findall(r"announced champion v\d+", "".join(logs.values()))
    assert len(announced) == 1, announced  # by the leader that promoted; followers do not echo it
