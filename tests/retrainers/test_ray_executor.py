"""Retrains on a real Ray cluster: a head started here on 127.0.0.1 with 2 CPUs, `sentiloop retrain`
as its driver (what the daemon starts). The retrain runs in a Ray worker, its progress reaches the
driver's progress file, a promotion lands; SIGTERM cancels the task, SIGKILL of the driver takes it too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sentiloop.consumers.broker import free_port
from sentiloop.models.store import ModelStore
from tests.conftest import produce, wait_until
from tests.consumers.test_integration_ingest import metrics_port
from tests.daemon.test_integration_continual import OVERRIDES, events, metric
from tests.daemon.test_integration_continual import prepared as prepared_daemon
from tests.retrainers.test_retrain_cycle import NEW, bootstrap, feed, sentences, settings_for

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """`ray start --head` on loopback with 2 CPUs and its own (short: unix socket paths) temp dir."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="sray", dir="/tmp")
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                              "--include-dashboard", "false", "--disable-usage-stats", f"--temp-dir={temp}"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def prepared(tmp_path: Path, address: str, new_events: int = 600) -> Path:
    settings = settings_for(tmp_path / "data")
    bootstrap(settings)
    feed(settings, *sentences(NEW, new_events, 3), prefix="new")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
        "mlflow": {"enabled": False}, "buffer": {"holdout_share": 0.3},
        "retrain": {"max_iterations": 2, "min_new_events": 10, "gate": {"min_holdout": 20}, "executor": "ray",
                    "ray": {"address": address, "num_cpus": 1}}}))
    return config


def driver(config: Path, progress: Path, out: Path) -> subprocess.Popen[bytes]:
    """The command the daemon starts; its JSON summary to ``out``, its log beside it."""
    with open(out, "wb") as stdout, open(out.with_suffix(".log"), "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "sentiloop", "retrain", "--offline", "--json", "--force", "--config", str(config),
                                 "--progress", str(progress)], stdout=stdout, stderr=stderr)


def progress_of(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_a_retrain_runs_on_ray_reports_progress_and_promotes(ray_head: str, tmp_path: Path) -> None:
    config = prepared(tmp_path, ray_head)
    progress, out = tmp_path / "progress.json", tmp_path / "out.json"
    process = driver(config, progress, out)
    assert process.wait(timeout=300) == 0, out.with_suffix(".log").read_text()[-3000:]
    summary = json.loads(out.read_text())
    assert summary["status"] == "promoted", summary
    assert ModelStore(tmp_path / "data").champion() == summary["version"] == 2
    state = progress_of(progress)
    assert state["executor"]["kind"] == "ray" and state["executor"]["pid"] != process.pid  # ran in a Ray worker
    assert state["phase"] == "gate decided"


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_stopping_the_driver_stops_the_task_on_the_cluster(ray_head: str, tmp_path: Path, how: str) -> None:
    config = prepared(tmp_path, ray_head, new_events=20_000)  # a retrain of a few seconds
    progress, out = tmp_path / "progress.json", tmp_path / "out.json"
    process = driver(config, progress, out)
    wait_until(lambda: "executor" in progress_of(progress), timeout=120, interval=0.02, what="the task to report from its Ray worker")
    task_pid = progress_of(progress)["executor"]["pid"]
    os.kill(task_pid, signal.SIGSTOP)  # hold the retrain mid-run, as long as the test needs
    if how == "terminate":  # what the daemon does to stop a retrain
        process.terminate()
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    else:  # the daemon (and with it the driver) SIGKILLed
        process.kill()
        process.wait(timeout=60)
    wait_until(lambda: not Path(f"/proc/{task_pid}").exists() or _zombie(task_pid), timeout=60, what="the Ray task to be killed")
    assert ModelStore(tmp_path / "data").champion() == 1  # nothing promoted


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


@pytest.mark.integration
def test_the_daemon_runs_its_volume_retrain_on_ray_and_hot_swaps(ray_head: str, broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = prepared_daemon(tmp_path)
    overrides = {**OVERRIDES, "retrain": {**OVERRIDES["retrain"], "executor": "ray", "ray": {"address": ray_head, "num_cpus": 1}}}
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **overrides)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, events(NEW, 600, 3, "new"))
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 2.0, timeout=180, what="the promotion of the Ray retrain")
    worker_logs = "".join(log.read_text(errors="replace") for log in (data / "retrain").glob("worker-*.log"))
    assert "(sentiloop-retrain-volume pid=" in worker_logs  # Ray's prefix: the retrain ran as a Ray task


def test_the_bert_fine_tune_runs_data_parallel_on_two_ray_train_workers(ray_head: str, tiny_bert: Path, tmp_path: Path) -> None:
    """Two TorchTrainer workers (gloo): the challenger learns as the single-process fine-tune does, and
    the champion is untouched."""
    import ray
    import torch

    from sentiloop.config import RetrainConfig
    from sentiloop.models.base import WarmStart
    from tests.models.test_bert import make_data, make_member

    champion = make_member(tiny_bert, fine_tune_epochs=3)
    champion.fit(make_data(120, seed=3))
    before = {k: v.clone() for k, v in champion.model.state_dict().items()}
    train, validation = make_data(400, seed=4), make_data(120, seed=5)
    single, single_report = champion.fine_tune_copy(train, validation)
    budget = WarmStart(RetrainConfig.model_validate({"executor": "ray", "ray": {"address": ray_head, "bert_workers": 2,
                                                                                 "bert_worker_cpus": 0.5}}), 1, tmp_path / "backup")
    ray.init(address=ray_head, logging_level="ERROR", log_to_driver=False)
    try:
        parallel, parallel_report = champion.warm_start(train, validation, budget)
    finally:
        ray.shutdown()
    assert all(torch.equal(before[k], v) for k, v in champion.model.state_dict().items())
    accuracy = {name: float((member.predict_proba(validation.texts).argmax(1) == validation.labels).mean())
                for name, member in (("single", single), ("parallel", parallel))}
    assert accuracy["parallel"] > 0.6 and abs(accuracy["parallel"] - accuracy["single"]) < 0.15, accuracy
    assert parallel_report.steps == single_report.steps  # the same batches, split across the two workers
    assert parallel_report.validation_probabilities is not None and parallel_report.validation_probabilities.shape == (120, 3)


def test_only_the_buffer_password_travels_to_the_cluster() -> None:
    from sentiloop.config import Settings
    from sentiloop.retrainers.ray_executor import task_environment

    settings = Settings.model_validate({"admin": {"token": "a" * 32}, "buffer": {"password": "pg-secret"},
                                        "kafka": {"sasl_plain_password": "kafka-secret"}})
    assert task_environment(settings) == {"SENTILOOP_BUFFER__PASSWORD": "pg-secret"}
