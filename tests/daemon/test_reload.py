"""Config reload pieces without a daemon: what may change live, and the file watcher's debounce."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sentiloop.config import Settings, load_settings
from sentiloop.daemon.reload import ConfigWatcher, plan_reload


def test_live_keys_apply_and_restart_only_keys_keep_their_running_value() -> None:
    running = Settings()
    new = Settings.model_validate({"data_dir": "/elsewhere", "kafka": {"topic": "other"}, "retrain": {"volume_threshold": 7},
                                   "models": {"bert": {"max_length": 32, "fine_tune_epochs": 2}, "weights": {"bert": 1.0}},
                                   "pause": {"ingestion": True}})
    plan = plan_reload(running, new)
    assert plan.result == "partial"
    assert plan.ignored == ["data_dir", "kafka.topic", "models.bert.max_length"]
    assert "retrain.volume_threshold" in plan.applied and "pause.ingestion" in plan.applied
    assert "models.bert.fine_tune_epochs" in plan.applied  # a retrain budget: the next worker reads it
    effective = plan.effective
    assert effective.data_dir == running.data_dir and effective.kafka.topic == running.kafka.topic
    assert effective.models.bert.max_length == running.models.bert.max_length and effective.models.bert.fine_tune_epochs == 2
    assert effective.retrain.volume_threshold == 7 and effective.pause.ingestion and effective.models.weights == {"bert": 1.0}


def test_a_changed_secret_is_reported_not_applied() -> None:
    running = load_settings(environ={"SENTILOOP_ADMIN__TOKEN": "a" * 20})
    new = load_settings(environ={"SENTILOOP_ADMIN__TOKEN": "b" * 20})
    plan = plan_reload(running, new)
    assert plan.ignored == ["admin.token"] and plan.effective.admin.token == running.admin.token


def test_the_watcher_waits_for_a_file_to_settle_and_never_reads_it_half_written(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log_level: INFO\n")
    seen: list[str] = []
    watcher = ConfigWatcher(path, lambda why: seen.append(path.read_text()), debounce_s=0.6, interval_s=0.1).start()
    try:
        with path.open("a") as handle:  # a slow writer: half a file, a pause shorter than the debounce, the rest
            handle.write("retrain:\n")
            handle.flush()
            time.sleep(0.3)
            handle.write("  volume_threshold: 99\n")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        watcher.stop()
    assert seen == ["log_level: INFO\nretrain:\n  volume_threshold: 99\n"]  # once, and only the complete file


def test_a_requested_reload_runs_on_the_watcher_thread(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    threads: list[str] = []
    done = threading.Event()
    watcher = ConfigWatcher(path, lambda why: (threads.append(threading.current_thread().name), done.set()), interval_s=0.1).start()
    try:
        watcher.request()  # what SIGHUP does: it only sets an event
        assert done.wait(5)
    finally:
        watcher.stop()
    assert threads == ["sentiloop-config-watch"]
