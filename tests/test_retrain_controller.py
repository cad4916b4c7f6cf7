"""The retrain controller's decisions on a real SQLite buffer: a drift retrain waits for new-regime
data (``drift_settle_events``) and its gate then judges on the holdout after the detection; a signal
suppressed by the cool-down stays latched instead of being thrown away."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sentiloop.buffer import SQLiteBufferStore, SourcedEvent
from sentiloop.config import Settings
from sentiloop.daemon.continual import RetrainController, drift_reference
from sentiloop.events import FeedbackEvent
from sentiloop.monitoring.drift import Signal
from sentiloop.monitoring.metrics import IngestMetrics


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

    def reset(self, names: list[str]) -> None:
        self.resets.append(list(names))
        for name in names:
            self.latched.pop(name, None)


def append(store: SQLiteBufferStore, start: int, count: int) -> None:
    store.append_batch([SourcedEvent(FeedbackEvent(f"e{i}", "fine text", i % 5, None, None, "tweets", "en", 1000 + i), "t", 0, i)
                        for i in range(start, start + count)])


def controller(tmp_path: Path, real_launch: bool = False,
               **policy: Any) -> tuple[RetrainController, LatchedSignals, list[dict[str, Any]], SQLiteBufferStore]:
    settings = Settings.model_validate({"data_dir": str(tmp_path), "retrain": {
        "volume_threshold": 10**9, "policy": {"warmup_events": 0, "hysteresis": 1, "cooldown_s": 0, **policy}}})
    store = SQLiteBufferStore(tmp_path / "buffer.sqlite3", settings.label_names, None)
    monitor = LatchedSignals()
    c = RetrainController(settings, store, IngestMetrics(), monitor)  # type: ignore[arg-type]
    c.models = SimpleNamespace(champion=lambda: 1)  # type: ignore[assignment]
    c.champion_version = 1
    launched: list[dict[str, Any]] = []
    if real_launch:
        return c, monitor, launched, store
    c.launch = lambda trigger, reason, mode=None, recent_since=None: launched.append(  # type: ignore[method-assign]
        {"trigger": trigger, "reason": reason, "recent_since": recent_since})
    return c, monitor, launched, store


def test_drift_retrain_waits_for_settle_events_then_judges_after_the_detection(tmp_path: Path) -> None:
    c, monitor, launched, store = controller(tmp_path, drift_settle_events=100)
    append(store, 0, 500)
    monitor.fire()
    c.tick()
    assert not launched and c.pending_drift is not None and c.pending_drift[0] == 500
    assert c.metrics.retrain_pending._value.get() == 1
    assert monitor.resets == [["error_rate"]]  # acted on: no stuck flag
    append(store, 500, 60)
    monitor.fire()  # a second detection while settling joins the pending retrain
    c.tick()
    assert not launched
    append(store, 560, 40)
    c.tick()
    assert len(launched) == 1 and launched[0]["trigger"] == "drift" and launched[0]["recent_since"] == 500
    assert "100 labelled events collected" in launched[0]["reason"] and c.pending_drift is None
    assert c.metrics.retrain_pending._value.get() == 0


def test_settle_zero_launches_at_once(tmp_path: Path) -> None:
    c, monitor, launched, store = controller(tmp_path, drift_settle_events=0)
    monitor.fire()
    c.tick()
    assert launched and launched[0]["recent_since"] is None


def test_suppressed_drift_stays_latched_and_acts_after_the_cooldown(tmp_path: Path) -> None:
    c, monitor, launched, store = controller(tmp_path, drift_settle_events=0, cooldown_s=3600)
    c.policy.record_retrain()  # a retrain just ran: cool-down
    monitor.fire()
    c.tick()
    assert not launched and "error_rate" in monitor.latched and not monitor.resets
    c.policy._last_retrain -= 7200  # the cool-down is over
    c.tick()
    assert launched and monitor.resets == [["error_rate"]]


def test_drift_reference_comes_from_the_champions_own_dataset(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps({"text": f"text number {i}", "label": settings.label_names[i % 5]}) + "\n" for i in range(200)))
    texts, labels = drift_reference(settings, {"data": str(data)})
    assert 0 < len(texts) < len(labels) < 200  # OOV texts: the golden split; label mix: train + golden
    assert set(texts) <= {f"text number {i}" for i in range(200)}
    assert drift_reference(settings, {"data": str(tmp_path / "gone.jsonl")}) == ([], [])  # no data: the stream's first window


def test_a_worker_that_cannot_be_started_is_counted_as_failed_and_the_controller_goes_on(tmp_path: Path) -> None:
    c, monitor, _, _ = controller(tmp_path, real_launch=True, drift_settle_events=0)
    (tmp_path / "retrain").write_text("a file where the worker's directory should be")  # mkdir fails: OSError
    monitor.fire()
    c.tick()  # the real launch(): must not raise
    assert c.worker is None
    assert c.metrics.retrain_runs.labels(trigger="drift", status="failed")._value.get() == 1
    c.tick()  # and the next tick works as usual
