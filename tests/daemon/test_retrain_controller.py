"""The retrain controller's decisions on a real SQLite buffer: a drift retrain waits for new-regime
data (``drift_settle_events``) and its gate then judges on the holdout after the detection; a signal
suppressed by the cool-down stays latched instead of being thrown away. Time is a fake clock and the
worker a fake process given to the controller (``clock=``, ``spawn=``): nothing is patched."""

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.config import Settings
from sentiloop.daemon.continual import RetrainController, drift_reference, spawn_worker
from sentiloop.events import FeedbackEvent
from sentiloop.models.store import ModelStore
from sentiloop.models.vote import VOTE_FOLD
from sentiloop.monitoring.drift import DriftReference, Signal
from sentiloop.monitoring.metrics import IngestMetrics
from sentiloop.retrainers.policy import RetrainState


class LatchedSignals:
    """The DriftMonitor's controller-facing side: latched signals, reset, scored count."""

    def __init__(self) -> None:
        self.latched: dict[str, Signal] = {}
        self.scored = 10_000
        self.resets: list[list[str]] = []

    def fire(self, name: str = "error_rate") -> None:
        self.latched[name] = Signal(name, True, 0.7, 0.5, f"{name} up")

    def signals(self) -> list[Signal]:
        return list(self.latched.values())

    def reset(self, names: Sequence[str] | None = None) -> None:
        names = list(self.latched) if names is None else list(names)
        self.resets.append(names)
        for name in names:
            self.latched.pop(name, None)

    def swap(self, champion: Any, version: int | None, reference: DriftReference | None = None) -> None:
        raise AssertionError("no champion is loaded in these tests")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """A worker process that runs until the test ends it (writing its JSON summary as the real one does)."""

    def __init__(self, command: list[str], output: Path) -> None:
        self.command, self.output = command, output
        self.pid = 4242
        self.returncode: int | None = None

    def arg(self, flag: str) -> str | None:
        return self.command[self.command.index(flag) + 1] if flag in self.command else None

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def exit(self, code: int = 0) -> None:
        self.output.write_text(json.dumps({"status": "skipped", "why": "a test worker"}))
        self.returncode = code


class Spawner:
    def __init__(self) -> None:
        self.workers: list[FakeWorker] = []

    def __call__(self, command: list[str], output: Path, log_path: Path, env: dict[str, str]) -> FakeWorker:
        self.workers.append(FakeWorker(command, output))
        return self.workers[-1]


def append(store: SQLiteBufferStore, start: int, count: int) -> None:
    store.append_batch([SourcedEvent(FeedbackEvent(f"e{i}", "fine text", i % 5, None, None, "tweets", "en", 1000 + i), "t", 0, i)
                        for i in range(start, start + count)])


def controller(tmp_path: Path, **policy: Any) -> tuple[RetrainController, LatchedSignals, Spawner, SQLiteBufferStore, FakeClock]:
    settings = Settings.model_validate({"data_dir": str(tmp_path), "retrain": {
        "volume_threshold": 10**9, "policy": {"warmup_events": 0, "hysteresis": 1, "cooldown_s": 0, **policy}}})
    store = SQLiteBufferStore(tmp_path / "buffer.sqlite3", settings.label_names, None)
    monitor = LatchedSignals()
    clock, spawn = FakeClock(), Spawner()
    c = RetrainController(settings, store, IngestMetrics(), monitor, clock=clock, spawn=spawn)
    ModelStore(tmp_path).path(1).mkdir(parents=True)
    ModelStore(tmp_path).set_champion(1, "test")
    c.champion_version = 1  # as if loaded (there is no real ensemble to load)
    return c, monitor, spawn, store, clock


def test_drift_retrain_waits_for_settle_events_then_judges_after_the_detection(tmp_path: Path) -> None:
    c, monitor, spawn, store, _ = controller(tmp_path, drift_settle_events=100)
    append(store, 0, 500)
    monitor.fire()
    c.tick()
    assert not spawn.workers and c.pending_drift is not None and c.pending_drift[0] == 500
    assert c.policy.state is RetrainState.SETTLING and c.status()["state"] == "settling"
    assert c.status()["pending_drift"]["since_seq"] == 500
    assert c.metrics.retrain_pending._value.get() == 1
    assert monitor.resets == [["error_rate"]]  # acted on: no stuck flag
    append(store, 500, 60)
    monitor.fire()  # a second detection while settling joins the pending retrain
    c.tick()
    assert not spawn.workers and c.pending_drift is not None and c.pending_drift[0] == 500
    append(store, 560, 40)
    c.tick()
    (worker,) = spawn.workers
    assert worker.arg("--trigger") == "drift" and worker.arg("--recent-since") == "500"
    assert "100 labelled events collected" in (worker.arg("--reason") or "") and c.pending_drift is None
    assert c.policy.state is RetrainState.RUNNING and c.status()["running"]["pid"] == 4242
    assert c.metrics.retrain_pending._value.get() == 0


def test_settle_zero_launches_at_once(tmp_path: Path) -> None:
    c, monitor, spawn, _, _ = controller(tmp_path, drift_settle_events=0)
    monitor.fire()
    c.tick()
    (worker,) = spawn.workers
    assert worker.arg("--trigger") == "drift" and worker.arg("--recent-since") is None


def test_a_worker_that_ends_takes_the_policy_back_to_idle(tmp_path: Path) -> None:
    c, monitor, spawn, _, _ = controller(tmp_path, drift_settle_events=0)
    monitor.fire()
    c.tick()
    c.tick()  # still running: nothing else happens
    assert c.policy.state is RetrainState.RUNNING and len(spawn.workers) == 1
    spawn.workers[0].exit()
    c.tick()
    assert c.policy.state is RetrainState.IDLE and c.worker is None and c.status()["state"] == "idle"
    assert c.policy.last_outcome == "skipped" and c.outcomes[-1].trigger == "drift"
    assert c.metrics.retrain_runs.labels(trigger="drift", status="skipped")._value.get() == 1


def test_suppressed_drift_stays_latched_and_acts_after_the_cooldown(tmp_path: Path) -> None:
    c, monitor, spawn, _, clock = controller(tmp_path, drift_settle_events=0, cooldown_s=3600)
    assert c.request("first")[0] == 202
    c.tick()  # the manual retrain starts: cool-down
    spawn.workers[0].exit()
    c.tick()
    monitor.fire()
    c.tick()
    assert len(spawn.workers) == 1 and "error_rate" in monitor.latched and not monitor.resets
    assert "cool-down" in c.status()["triggers"]["policy_blocked"]
    clock.now += 3600  # the cool-down is over
    c.tick()
    assert len(spawn.workers) == 2 and spawn.workers[1].arg("--trigger") == "drift"
    assert monitor.resets[-1] == ["error_rate"]


def test_manual_requests_obey_the_policy_and_the_pause_unless_forced(tmp_path: Path) -> None:
    c, _, spawn, _, clock = controller(tmp_path, cooldown_s=600)
    status, answer = c.request("operator", mode="full")
    assert status == 202 and answer["policy"] == "allowed"
    c.tick()
    (worker,) = spawn.workers
    assert worker.arg("--trigger") == "manual" and worker.arg("--mode") == "full" and worker.arg("--reason") == "operator"
    status, answer = c.request("again")
    assert status == 409 and "already running (pid 4242)" in answer["why"]
    worker.exit()
    c.tick()
    status, answer = c.request("again")
    assert status == 429 and "cool-down" in answer["why"]
    status, answer = c.request("again", force=True)
    assert status == 202 and answer["forced"] and "cool-down" in answer["policy"]
    c.tick()
    assert len(spawn.workers) == 2 and "(forced past: cool-down" in (spawn.workers[1].arg("--reason") or "")
    spawn.workers[1].exit()
    c.tick()
    clock.now += 600
    c.paused = True
    assert c.request("paused")[0] == 429
    assert c.request("paused", force=True)[0] == 202
    c.tick()  # a forced request runs even while retraining is paused
    assert len(spawn.workers) == 3


def test_a_scheduled_retrain_runs_once(tmp_path: Path) -> None:
    c, _, spawn, _, _ = controller(tmp_path)
    c.policy.observe_schedule("schedule 0 3 * * *")
    c.tick()
    (worker,) = spawn.workers
    assert worker.arg("--trigger") == "schedule"
    worker.exit()
    c.tick()
    c.tick()
    assert len(spawn.workers) == 1


def test_the_worker_gets_its_own_files_and_the_daemon_keeps_no_handle_open(tmp_path: Path) -> None:
    output, log_path = tmp_path / "w.json", tmp_path / "w.log"
    process = spawn_worker([sys.executable, "-c", "import sys; print('{}'); print('oops', file=sys.stderr)"], output, log_path, {})
    assert process.wait(timeout=60) == 0
    assert output.read_text().strip() == "{}" and log_path.read_text().strip() == "oops"
    assert process.stdout is None and process.stderr is None  # files, not pipes: nothing left for the daemon to close


def test_drift_reference_comes_from_the_champions_own_dataset(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps({"text": f"text number {i}", "label": settings.label_names[i % 5]}) + "\n" for i in range(200)))
    reference = drift_reference(settings, {"data": str(data)})
    texts, labels = reference.texts, reference.labels
    assert 0 < len(texts) < len(labels) < 200  # OOV texts: the validation split; label mix: train + validation
    assert set(texts) <= {f"text number {i}" for i in range(200)}
    assert list(reference.golden_texts) == list(texts) and len(reference.golden_labels) == len(texts)  # no vote fold here
    folded = drift_reference(settings, {"data": str(data), "vote": {"fitted_on": VOTE_FOLD}})
    assert 0 < len(folded.golden_texts) < len(texts)  # the gate's golden set: the vote fold left out
    assert drift_reference(settings, {"data": str(tmp_path / "gone.jsonl")}) == DriftReference()  # no data: the stream's first window


def test_a_worker_that_cannot_be_started_is_counted_as_failed_and_the_controller_goes_on(tmp_path: Path) -> None:
    c, monitor, spawn, _, _ = controller(tmp_path, drift_settle_events=0)
    (tmp_path / "retrain").write_text("a file where the worker's directory should be")  # mkdir fails: OSError
    monitor.fire()
    c.tick()  # the real launch(): must not raise
    assert c.worker is None and not spawn.workers and c.policy.state is RetrainState.IDLE
    assert c.metrics.retrain_runs.labels(trigger="drift", status="failed")._value.get() == 1
    c.tick()  # and the next tick works as usual
