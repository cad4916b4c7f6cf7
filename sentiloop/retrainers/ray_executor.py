"""Retrains on a Ray cluster (``retrain.executor: ray``): the retrain runs as one Ray task.

The daemon tracks a Ray retrain exactly as a local one, because what it starts is the same
``sentiloop retrain --json`` process; with this executor that process is a thin Ray *driver*:

- it submits ``run_retrain`` as a task reserving ``retrain.ray.num_cpus`` on some node, with the
  settings as data (secrets left out) and only the buffer's password in the task's environment;
- the task's progress file is relayed to the driver through a Ray queue and written where the
  daemon reads it, so ``/v1/status`` shows the iteration and member as for a local worker;
- the task's summary comes back as the driver's JSON on stdout; a task that raises is a failed run;
- **kill**: SIGTERM to the driver cancels the task (``ray.cancel(force=True)``); a driver that dies
  (SIGKILL, or its daemon dying: it dies with it) takes its task with it — Ray kills the tasks of a
  driver that is gone. Either way the daemon sees a failed run and the champion is untouched.

The task reads and writes ``data_dir`` (the champion, checkpoints, the challenger) at the same path:
nodes on the daemon's host, or with ``data_dir`` on storage they share. The buffer (PostgreSQL for
other hosts) and the MLflow registry are reached over the network as usual.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sentiloop.config import Settings, deep_merge, env_overrides, secret_env, settings_without_secrets
from sentiloop.files import atomic_write_json
from sentiloop.retrainers.results import RetrainSummary
from sentiloop.retrainers.strategies import Mode

log = logging.getLogger(__name__)
RETRAIN_SECRET = "SENTILOOP_BUFFER__PASSWORD"
RELAY_S = 0.25  # how often the task's progress file is relayed (a small JSON read)


def run_on_ray(settings: Settings, trigger: str, reason: str, mode: Mode | None, force: bool, recent_since: int | None,
               progress: Path | None) -> RetrainSummary:
    """Submit the retrain to the cluster and wait for it; returns its summary (a failed one if the task failed)."""
    import ray
    from ray.util.queue import Queue

    assert settings.retrain.ray is not None
    cluster = settings.retrain.ray
    ray.init(address=cluster.address, namespace="sentiloop", logging_level=logging.WARNING, log_to_driver=True,
             configure_logging=False, runtime_env={"env_vars": task_environment(settings)})
    relay = Queue(maxsize=100) if progress is not None else None
    task = ray.remote(num_cpus=cluster.num_cpus, max_retries=0)(_retrain_task).options(name=f"sentiloop-retrain-{trigger}").remote(
        settings_without_secrets(settings), trigger, reason, mode, force, recent_since, relay)
    cancelled = threading.Event()

    def cancel(_signum: int, _frame: FrameType | None) -> None:
        cancelled.set()  # acted on by the loop below, within RELAY_S, outside Ray's own code

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        while not cancelled.is_set():
            done, _ = ray.wait([task], timeout=RELAY_S)
            _drain(relay, progress)
            if done:
                return RetrainSummary.model_validate_json(ray.get(task))
        ray.cancel(task, force=True)
        log.warning("retrain stopped: its task on Ray was cancelled")
        raise SystemExit(128 + signal.SIGTERM)
    except ray.exceptions.RayTaskError as exc:  # the retrain raised on the cluster
        return RetrainSummary.failed(f"the retrain failed on Ray: {exc.cause!r}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def task_environment(settings: Settings) -> dict[str, str]:
    """The secrets the retrain task gets: only the buffer's password. The cluster's operators can read
    a runtime environment, and a retrain has no use for Kafka's or the admin API's secrets."""
    return {name: value for name, value in secret_env(settings).items() if name == RETRAIN_SECRET}


def _drain(relay: Any, progress: Path | None) -> None:
    """Write the newest relayed progress where the daemon reads it."""
    if relay is None or progress is None:
        return
    latest = None
    while not relay.empty():
        latest = relay.get_nowait()
    if latest is not None:
        try:
            atomic_write_json(progress, latest)
        except OSError:
            pass  # progress is informational


def _retrain_task(settings_data: dict[str, Any], trigger: str, reason: str, mode: Mode | None, force: bool,
                  recent_since: int | None, relay: Any) -> str:
    """On a Ray worker: rebuild the settings (secrets from the task's environment) and run the retrain."""
    from sentiloop.retrainers.run import run_retrain
    from sentiloop.runtime import prepare_environment, use_threads

    prepare_environment()
    settings = Settings.model_validate(deep_merge(settings_data, env_overrides(os.environ)))
    use_threads(settings.models.threads)
    with tempfile.TemporaryDirectory(prefix="sentiloop-ray-progress-") as tmp:
        progress = Path(tmp) / "progress.json"
        stop = threading.Event()
        relaying = threading.Thread(target=_relay, args=(progress, relay, stop), daemon=True) if relay is not None else None
        if relaying is not None:
            relaying.start()
        try:
            summary = run_retrain(settings, trigger, reason, mode, force=force, recent_since=recent_since,
                                  progress=progress if relay is not None else None)
        finally:
            stop.set()
            if relaying is not None:
                relaying.join(timeout=5)
                _send(progress, relay)
    return summary.to_json()


def _relay(progress: Path, relay: Any, stop: threading.Event) -> None:
    while not stop.wait(RELAY_S):
        _send(progress, relay)


def _send(progress: Path, relay: Any) -> None:
    try:
        state = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not written yet, or mid-write
    import ray

    state["executor"] = {"kind": "ray", "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    try:
        relay.put(state, block=False)
    except Exception:
        pass  # the queue is full or the driver is gone: progress is informational
