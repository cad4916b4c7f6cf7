"""The daemon's continual-learning loop on the real broker: volume trigger → worker process →
promotion → hot swap → announcement; a killed worker; ingestion flowing during a retrain."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sentiloop.config import Settings
from sentiloop.models.store import ModelStore
from tests.conftest import admin_request, admin_token, buffer_stats, produce, wait_until
from tests.consumers.test_integration_ingest import http_get, metrics_port, read_topic
from tests.retrainers.test_retrain_cycle import NEW, OLD, bootstrap, sentences

pytestmark = pytest.mark.integration

OVERRIDES = {
    "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
    "mlflow": {"enabled": False},
    "buffer": {"holdout_share": 0.3},
    "retrain": {"volume_threshold": 300, "min_new_events": 10, "max_iterations": 2,
                "policy": {"warmup_events": 0, "cooldown_s": 0, "hysteresis": 1},
                "gate": {"min_holdout": 20}},
}


def prepared(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    bootstrap(Settings.model_validate({"data_dir": str(data), **OVERRIDES}))
    return data


def events(vocab: dict, n: int, seed: int, prefix: str) -> list[dict]:
    texts, labels = sentences(vocab, n, seed)
    return [{"event_id": f"{prefix}{i}", "text": t, "label": y, "domain": "new"} for i, (t, y) in enumerate(zip(texts, labels))]


def metric(port: int, name: str) -> float:
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(name + " ") :
            return float(line.split()[-1])
    return float("nan")


def test_volume_trigger_promotes_hot_swaps_and_announces(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **OVERRIDES)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, events(NEW, 600, 3, "new"))
    wait_until(lambda: ModelStore(data).champion() == 2, timeout=120, what="a promotion")
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 2.0, timeout=30, what="the hot swap")
    assert 'sentiloop_retrain_runs_total{status="promoted",trigger="volume"} 1.0' in http_get(port, "/metrics")[1]
    assert metric(port, "sentiloop_promotions_total") == 1.0
    announcements = [json.loads(r.value) for r in read_topic(broker.bootstrap, f"{topic}.models", 1)]
    assert announcements[0]["version"] == 2 and announcements[0]["previous"] == 1
    assert daemon.alive()


def test_killed_worker_leaves_champion_and_daemon_healthy_and_ingestion_flows(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)
    overrides = {**OVERRIDES, "retrain": {**OVERRIDES["retrain"], "volume_threshold": 100000}}
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **overrides)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, events(NEW, 400, 4, "a"))
    wait_until(lambda: buffer_stats(data)["events_stored"] >= 700, what="the first events")
    assert admin_request(port, "/v1/retrain", None, {"reason": "test"})[0] == 401  # no token: refused
    status, answer = admin_request(port, "/v1/retrain", admin_token(data), {"reason": "test"})
    assert status == 202 and answer["accepted"], answer
    wait_until(lambda: metric(port, "sentiloop_retrain_running") == 1.0, what="the worker to start")
    wait_until(lambda: bool(worker_pids()), timeout=10, what="the worker process")
    (pid,) = worker_pids()
    os.kill(pid, signal.SIGSTOP)  # freeze it mid-run: a retrain that takes as long as the test needs
    produce(broker.bootstrap, topic, events(OLD, 300, 5, "during"))  # ingestion during the retrain
    wait_until(lambda: buffer_stats(data)["events_stored"] >= 1000, what="events stored during the retrain")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: 'sentiloop_retrain_runs_total{status="failed",trigger="manual"} 1.0' in http_get(port, "/metrics")[1],
               timeout=30, what="the failure to be recorded")
    assert ModelStore(data).champion() == 1
    assert daemon.alive() and http_get(port, "/healthz")[0] == 200
    states = [json.loads(p.read_text()) for p in (data / "retrain").glob("*/state.json")]
    assert all(s["status"] == "interrupted" for s in states)  # marked so: the next retrain resumes it
    assert "Revoking previously assigned partitions" not in daemon.log()  # no rebalance while retraining


def worker_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_worker(p)]


def _is_worker(proc: Path) -> bool:
    try:
        command = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"retrain" in command and b"--json" in command


def test_a_challenger_serves_only_after_its_shadow_run_on_live_traffic(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)
    overrides = {**OVERRIDES, "retrain": {**OVERRIDES["retrain"], "shadow": {"events": 200, "min_labels": 20}}}
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **overrides)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, events(NEW, 600, 3, "new"))
    wait_until(lambda: metric(port, "sentiloop_shadow_running") == 1.0, timeout=120, what="the shadow run to start")
    assert ModelStore(data).champion() == 1  # the gate passed, but nothing serves the challenger yet
    assert 'sentiloop_retrain_runs_total{status="shadow",trigger="volume"} 1.0' in http_get(port, "/metrics")[1]
    placed: list[tuple[float, dict]] = []
    for i, event in enumerate(events(NEW, 300, 9, "live")):  # unlabelled traffic; its labels 20 events behind
        placed.append((i, {k: v for k, v in event.items() if k != "label"}))
        placed.append((i + 20.5, {"event_id": f"label-{i}", "ref_event_id": event["event_id"], "label": event["label"]}))
    produce(broker.bootstrap, topic, [record for _, record in sorted(placed, key=lambda p: p[0])], partitions=1)
    wait_until(lambda: ModelStore(data).champion() == 2, timeout=60, what="the promotion after the shadow run")
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 2.0, timeout=30, what="the hot swap")
    body = http_get(port, "/metrics")[1]
    assert 'sentiloop_shadow_decisions_total{result="promoted"} 1.0' in body and metric(port, "sentiloop_shadow_running") == 0.0
    assert metric(port, "sentiloop_shadow_events") == 200.0
    assert 0.0 < metric(port, "sentiloop_shadow_agreement") <= 1.0
    realised = {m: metric(port, f'sentiloop_shadow_accuracy{{kind="realised",model="{m}"}}') for m in ("champion", "challenger")}
    assert realised["challenger"] >= realised["champion"]  # the new domain's labels that matured during the shadow run
