"""The admin API of a real daemon (subprocess, real broker, real ports): serving with hot swap,
promote/rollback, pause/resume, the retrain policy, config reload, the CLI through the API, secrets."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sentiloop.models.ensemble import Ensemble
from sentiloop.models.store import ModelStore
from tests.conftest import admin_request, admin_token, buffer_stats, produce, wait_until
from tests.consumers.test_integration_ingest import http_get, metrics_port
from tests.daemon.test_integration_continual import NEW, OVERRIDES, events, metric, prepared

pytestmark = pytest.mark.integration


def cli(daemon, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "sentiloop", *args, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=120)


def second_version(data: Path) -> int:
    """v2: the champion's members with other weights (a real, verifiable checkpoint)."""
    store = ModelStore(data)
    champion = Ensemble.load(store.champion_path())
    version, path = store.next_path()
    Ensemble(champion.members, champion.weights, champion.label_names, info={"data": "synthetic"}).save(path)
    return version


def test_serving_promote_rollback_pause_and_the_cli(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)
    v2 = second_version(data)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **OVERRIDES)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    token_file = data / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = admin_token(data)
    assert token not in daemon.log()

    status, answer = admin_request(port, "/v1/predict", token, {"texts": ["good great", "awful bad"]})
    assert status == 200 and answer["model_version"] == 1 and len(answer["predictions"]) == 2
    assert set(answer["predictions"][0]["probabilities"]) == {"very_negative", "negative", "neutral", "positive", "very_positive"}

    failures: list[object] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:  # requests keep flowing through the hot swaps
        while not stop.is_set():
            code, body = admin_request(port, "/v1/predict", token, {"text": "a good film"})
            if code != 200:
                failures.append((code, body))
            else:
                versions.add(body["model_version"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        promoted = cli(daemon, "promote", str(v2), "--reason", "test")
        assert promoted.returncode == 0 and f"v{v2:04d}" in promoted.stdout, promoted.stderr
        wait_until(lambda: v2 in versions, what="predictions from the promoted version")
        status, answer = admin_request(port, "/v1/rollback", token, {"reason": "back"})
        assert status == 200 and answer["champion"] == 1
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert admin_request(port, "/v1/predict", token, {"text": "x"})[1]["model_version"] == 1

    paused = cli(daemon, "pause", "ingestion")
    assert paused.returncode == 0 and "ingestion paused: True" in paused.stdout
    before = buffer_stats(data)["events_stored"]
    produce(broker.bootstrap, topic, events(NEW, 100, 8, "while-paused"))
    time.sleep(3)
    assert buffer_stats(data)["events_stored"] == before
    assert 'sentiloop_ingest_paused{cause="operator"} 1.0' in http_get(port, "/metrics")[1]
    assert http_get(port, "/readyz")[0] == 200  # paused by an operator is not broken
    assert cli(daemon, "resume").returncode == 0
    wait_until(lambda: buffer_stats(data)["events_stored"] == before + 100, what="the events held while paused")

    shown = cli(daemon, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    status_json = json.loads(shown.stdout)
    assert status_json["champion"]["version"] == 1 and status_json["events_stored"] == before + 100
    assert "triggers" in status_json["retraining"]
    assert daemon.alive()


def test_manual_retrain_obeys_the_rate_limit_unless_forced(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)
    overrides = {**OVERRIDES, "retrain": {**OVERRIDES["retrain"], "volume_threshold": 100_000,
                                          "policy": {**OVERRIDES["retrain"]["policy"], "max_retrains": 1}}}
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **overrides)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    token = admin_token(data)
    produce(broker.bootstrap, topic, events(NEW, 300, 4, "a"))
    wait_until(lambda: buffer_stats(data)["events_stored"] >= 600, what="new events")
    status, answer = admin_request(port, "/v1/retrain", token, {"reason": "first"})
    assert status == 202 and answer["policy"] == "allowed"
    wait_until(lambda: metric(port, "sentiloop_retrain_running") == 1.0, what="the worker to start")
    assert admin_request(port, "/v1/retrain", token, {"reason": "again"})[0] == 409  # one at a time
    wait_until(lambda: metric(port, "sentiloop_retrain_running") == 0.0, timeout=300, what="the retrain to finish")
    status, answer = admin_request(port, "/v1/retrain", token, {"reason": "second"})
    assert status == 429 and "rate limit" in answer["why"] and "force" in answer["hint"]
    status, answer = admin_request(port, "/v1/retrain", token, {"reason": "second", "force": True})
    assert status == 202 and answer["forced"] and answer["policy"].startswith("overridden: rate limit")


def test_config_reload_by_file_signal_and_api(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data)
    port = metrics_port(daemon)
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, what="the daemon to be ready")
    token = admin_token(data)
    config = yaml.safe_load(daemon.config_path.read_text())

    def write(document: dict) -> None:  # atomically, as deploy tools do
        tmp = daemon.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document))
        os.replace(tmp, daemon.config_path)

    write({**config, "retrain": {"volume_threshold": 1234}, "pause": {"ingestion": True}, "log_level": "DEBUG"})
    wait_until(lambda: metric(port, 'sentiloop_config_reloads_total{result="applied"}') == 1.0, what="the file change applied")
    status, answer = admin_request(port, "/v1/status", token, method="GET")
    assert answer["retraining"]["triggers"]["volume"]["threshold"] == 1234
    assert answer["ingestion"]["ingestion"] == {"paused": True, "cause": "operator"}

    write({**config, "kafka": {**config["kafka"], "topic": "elsewhere"}, "retrain": {"volume_threshold": 1234},
           "pause": {"ingestion": False}})
    status, answer = admin_request(port, "/v1/reload", token)
    assert status == 200 and answer["result"] == "partial" and answer["restart_needed"] == ["kafka.topic"]
    assert "pause.ingestion" in answer["applied"]

    daemon.config_path.write_text("retrain: {volume_threshold: -5}\n")
    status, answer = admin_request(port, "/v1/reload", token)
    assert status == 422 and answer["result"] == "rejected" and "retrain.volume_threshold" in answer["error"]
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: (metric(port, 'sentiloop_config_reloads_total{result="rejected"}') or 0) >= 2, what="SIGHUP refused too")
    status, answer = admin_request(port, "/v1/status", token, method="GET")
    assert answer["retraining"]["triggers"]["volume"]["threshold"] == 1234  # the old config stays
    assert daemon.alive()


def test_a_sasl_password_from_the_environment_is_in_no_file_and_no_log(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    password = "s3cret-sasl-password-4f9a"
    data = prepared(tmp_path)
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, env={"SENTILOOP_KAFKA__SASL_PLAIN_PASSWORD": password},
                            **OVERRIDES)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, events(NEW, 400, 4, "s"))
    wait_until(lambda: (metric(port, 'sentiloop_retrain_runs_total{status="promoted",trigger="volume"}') or 0)
               + (metric(port, 'sentiloop_retrain_runs_total{status="rejected",trigger="volume"}') or 0) >= 1,
               timeout=300, what="a retrain (its worker gets the config)")
    shown = subprocess.run([sys.executable, "-m", "sentiloop", "config", "show", "--config", str(daemon.config_path)],
                           capture_output=True, text=True, env={**os.environ, "SENTILOOP_KAFKA__SASL_PLAIN_PASSWORD": password})
    assert password not in shown.stdout and "**********" in shown.stdout
    daemon.stop()
    leaks = [str(p) for p in data.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaks
    assert password not in daemon.log()
    effective = data / "retrain" / "effective-config.yaml"
    assert stat.S_IMODE(effective.stat().st_mode) == 0o600
    assert "sasl_plain_password" not in effective.read_text()
