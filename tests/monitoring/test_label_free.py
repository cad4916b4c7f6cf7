"""Label-free monitoring: calibration, CBPE estimate, prediction shift and confidence drop, in the monitor."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sentiloop.config import DriftConfig
from sentiloop.events import FeedbackEvent
from sentiloop.monitoring.drift import DriftReference
from sentiloop.monitoring.drift_monitor import DriftMonitor
from sentiloop.monitoring.label_free import Calibration, ConfidenceDrop, PerformanceEstimate, expected_calibration_error
from sentiloop.monitoring.metrics import IngestMetrics


def test_calibration_turns_overconfident_probabilities_into_accuracy() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 4000)
    correct = (rng.uniform(size=4000) < confidence - 0.2).astype(float)  # 20 points overconfident
    calibration = Calibration.fit(confidence, correct)
    assert 0.17 < calibration.ece < 0.23
    fresh = rng.uniform(0.5, 1.0, 4000)
    truth = (rng.uniform(size=4000) < fresh - 0.2).mean()
    assert abs(calibration(fresh).mean() - truth) < 0.02
    assert abs(fresh.mean() - truth) > 0.15  # the raw confidence would be 20 points off
    assert expected_calibration_error(calibration(fresh), (rng.uniform(size=4000) < fresh - 0.2).astype(float)) < 0.05


def test_confidence_drop_needs_a_full_window_and_a_real_drop() -> None:
    drop = ConfidenceDrop(0.8, window=100, margin=0.05)
    assert not any(drop.update(0.78).fired for _ in range(300))  # within the margin
    signals = [drop.update(0.6) for _ in range(100)]
    assert signals[-1].fired and "fell to" in signals[-1].reason
    learnt = ConfidenceDrop(None, window=50, margin=0.05)  # no golden set: the first window is the baseline
    assert not any(learnt.update(0.9).fired for _ in range(120)) and learnt.baseline == 0.9


def test_a_late_label_counts_in_the_chunk_of_its_prediction() -> None:
    estimate = PerformanceEstimate(None, chunk=2, keep=2, min_labels=1)
    for i, (confidence, predicted) in enumerate([(0.9, 1), (0.6, 0), (0.8, 2), (0.7, 2), (0.5, 1)]):
        estimate.observe(f"e{i}", confidence, predicted)
    assert [c["index"] for c in estimate.report()] == [1, 2]  # chunk 0 (e0, e1) left
    assert estimate.estimated == pytest.approx((0.7 + 0.5) / 2)  # the rolling gauge: the last `chunk` events
    estimate.label("e0", 1)  # its chunk is gone: not counted anywhere
    estimate.label("e2", 2)
    estimate.label("e3", 0)
    estimate.label("e3", 2)  # a correction: the first label counted, not both
    chunks = estimate.report()
    assert chunks[0] == {"index": 1, "events": 2, "estimated": 0.75, "estimated_golden": 0.75, "labelled": 2, "realised": 0.5}
    assert chunks[1]["realised"] is None  # no label matured for e4 yet
    compared = estimate.latest_compared()
    assert compared is not None and compared.index == 1


def test_matured_labels_recalibrate_the_estimate_where_the_golden_calibration_fails() -> None:
    golden = Calibration.fit(np.full(500, 0.95), np.ones(500))  # on its golden set the champion is right when sure
    estimate = PerformanceEstimate(golden, chunk=100, keep=20, min_labels=10, recalibrate=300)
    for i in range(300):  # a new domain: just as sure, right half the time
        estimate.observe(f"e{i}", 0.95, i % 2)
    for i in range(300):
        estimate.label(f"e{i}", 0)
    for i in range(300, 400):
        estimate.observe(f"e{i}", 0.95, i % 2)
    first, last = estimate.report()[0], estimate.report()[-1]
    assert first["estimated"] > 0.9 and first["realised"] == 0.5  # before the labels matured: optimistic
    assert abs(last["estimated"] - 0.5) < 0.05 and last["estimated_golden"] > 0.9  # after: it knows the domain


class Champion:
    """Positive texts are confidently right, 'odd' texts (the new domain) are uncertain: a small fake."""

    def __init__(self) -> None:
        self.members: dict[str, object] = {}  # no vocabulary: no OOV signal

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        rows = {"pos": [0.05, 0.05, 0.9], "neg": [0.9, 0.05, 0.05], "odd": [0.3, 0.45, 0.25]}
        return np.array([rows[t.split()[0]] for t in texts])


def traffic(prefix: str, n: int, start: int = 0) -> list[tuple[FeedbackEvent, bool]]:
    kinds = ["pos", "neg"] if prefix == "in" else ["odd"]
    return [(FeedbackEvent(f"{prefix}{i}", f"{kinds[i % len(kinds)]} {i}", None, None, None, None, None, 0), True)
            for i in range(start, start + n)]


def test_a_shift_in_unlabelled_traffic_fires_before_any_label_arrives() -> None:
    metrics = IngestMetrics(CollectorRegistry())
    monitor = DriftMonitor(DriftConfig(prediction_window=200, confidence_margin=0.1), 3, metrics)
    golden_texts = [f"{k} g{i}" for i in range(200) for k in ("pos", "neg")]
    golden_labels = [2 if t.startswith("pos") else 0 for t in golden_texts]
    golden_labels[:40] = [1] * 40  # the champion is right on 90 % of its golden set
    monitor.swap(Champion(), 1, DriftReference(golden_texts=golden_texts, golden_labels=golden_labels))
    assert 0 < metrics.champion_ece._value.get() < 0.1
    monitor.process(traffic("in", 600))
    assert monitor.signals() == []
    assert abs(monitor.label_free_status()["estimated_accuracy"] - 0.9) < 0.03  # calibrated on golden, not the raw 0.9 confidence
    labels = [(FeedbackEvent(e.event_id, e.text, 2 if e.text.startswith("pos") else 0, None, None, None, None, 0), False)
              for e, _ in traffic("in", 200, start=0)]
    monitor.process(labels)  # delayed labels for the oldest chunk: its realised accuracy, next to its estimate
    status = monitor.label_free_status()
    assert status["realised_accuracy"] == 1.0 and status["compared_chunk"]["index"] == 0
    assert metrics.estimation_error._value.get() == status["compared_chunk"]["estimated"] - 1.0
    monitor.process(traffic("odd", 200))
    fired = {s.name for s in monitor.signals()}
    assert {"prediction_shift", "confidence_drop"} <= fired and monitor.scored == 200  # no label for the new domain yet
    assert metrics.estimated_accuracy._value.get() < 0.8
