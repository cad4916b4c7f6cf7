"""The shadow run's figures and verdict (the daemon-level run is in tests/daemon/test_integration_continual.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sentiloop.monitoring.shadow import ShadowRun


class Constant:
    """A challenger that always predicts ``label`` with ``confidence``."""

    def __init__(self, label: int, confidence: float) -> None:
        self.label, self.confidence = label, confidence

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        rows = np.full((len(texts), 3), (1 - self.confidence) / 2)
        rows[:, self.label] = self.confidence
        return rows


def champion_scores(n: int) -> np.ndarray:
    return np.tile([0.1, 0.1, 0.8], (n, 1))  # always class 2, confidence 0.8


def test_a_worse_challenger_is_refused_on_both_estimated_and_realised_accuracy() -> None:
    shadow = ShadowRun(Constant(0, 0.5), version=7, events=100, champion_calibration=None, challenger_calibration=None,
                       min_labels=10)
    shadow.observe([f"e{i}" for i in range(60)], ["t"] * 60, champion_scores(60))
    assert not shadow.done
    shadow.observe([f"e{i}" for i in range(60, 160)], ["t"] * 100, champion_scores(100))
    assert shadow.done and len(shadow.pairs) == 100  # capped at `events`
    for i in range(20):
        shadow.label(f"e{i}", 2)
    report = shadow.report()
    assert report.agreement == 0.0 and report.labelled == 20
    assert report.estimated == pytest.approx({"champion": 0.8, "challenger": 0.5})
    assert report.realised == {"champion": 1.0, "challenger": 0.0}
    reasons = report.verdict(tolerance=0.01)
    assert len(reasons) == 2 and "estimated accuracy 0.500" in reasons[0] and "realised accuracy 0.000" in reasons[1]


def test_an_equal_challenger_passes_and_realised_waits_for_enough_labels() -> None:
    shadow = ShadowRun(Constant(2, 0.8), version=8, events=10, champion_calibration=None, challenger_calibration=None,
                       min_labels=5)
    shadow.observe([f"e{i}" for i in range(10)], ["t"] * 10, champion_scores(10))
    shadow.label("e1", 0)
    report = shadow.report()
    assert report.agreement == 1.0 and report.realised == {"champion": None, "challenger": None}
    assert report.verdict(tolerance=0.0) == []
