"""Label-free monitoring: what the champion's own predictions on unlabelled traffic say before labels arrive.

Labels are late (hours, days) and partial, so a shift in traffic would stay invisible until they come.
Three figures need no label:

- ``PredictionShiftDrift``: the predicted-class mix of recent traffic against the mix the champion
  predicts on its golden set (Jensen-Shannon distance, like the label-shift signal);
- ``ConfidenceDrop``: the mean top-class probability of recent traffic against the golden set's;
- ``PerformanceEstimate``: CBPE (confidence-based performance estimation, as in NannyML): with
  *calibrated* probabilities the expected accuracy of a prediction is its top-class probability, so
  the mean over recent traffic estimates accuracy. Ensemble votes are not calibrated, so a
  ``Calibration`` (histogram binning of the top-class probability) is fitted on the golden set of
  every champion, whose expected calibration error (ECE) is reported too. When labels mature for the
  same traffic, the realised accuracy is kept next to the estimate, so the estimation error is visible.

CBPE assumes the champion stays calibrated under the shift (no concept drift: P(y|x) unchanged); a
domain shift where the champion is confidently wrong is what the label-based signals catch later.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from sentiloop.monitoring.drift import LabelShiftDrift, Signal

CALIBRATION_BINS = 10
_SHRINK = 10.0  # pseudo-counts pulling a sparse bin toward its prior (see Calibration.fit)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Standard ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    if len(confidence) == 0:
        return 0.0
    index = np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(float(np.mean(correct[mask])) - float(np.mean(confidence[mask])))
    return total


@dataclass(frozen=True)
class Calibration:
    """Top-class probability → expected accuracy, by histogram binning fitted on labelled data."""

    accuracy_by_bin: tuple[float, ...]
    ece: float  # of the raw probabilities, on the data it was fitted on

    @classmethod
    def fit(cls, confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration:
        confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
        gap = float(correct.mean() - confidence.mean()) if len(correct) else 0.0  # < 0: overconfident overall
        index = np.minimum((confidence * bins).astype(int), bins - 1)
        table = []
        for b in range(bins):
            mask = index == b
            # A sparse bin leans on its prior instead of on its three examples: its own confidence,
            # corrected by the overall gap. A shifted domain lands in bins the golden set hardly fills.
            prior = min(1.0, max(0.0, float(confidence[mask].mean() if mask.any() else (b + 0.5) / bins) + gap))
            table.append((float(correct[mask].sum()) + _SHRINK * prior) / (int(mask.sum()) + _SHRINK))
        return cls(tuple(table), expected_calibration_error(confidence, correct, bins))

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        bins = len(self.accuracy_by_bin)
        index = np.minimum((np.asarray(confidence, dtype=float) * bins).astype(int), bins - 1)
        return np.asarray(self.accuracy_by_bin)[index]


class PredictionShiftDrift(LabelShiftDrift):
    """The predicted-class mix of a traffic window against the champion's predictions on its golden set."""

    name = "prediction_shift"
    subject = "predicted-class distribution"


class ConfidenceDrop:
    """Fires when the mean top-class probability of a traffic window falls ``margin`` below the baseline
    (the golden set's; without one, the first full window's)."""

    name = "confidence_drop"

    def __init__(self, baseline: float | None, window: int = 1000, margin: float = 0.05) -> None:
        self.baseline, self.window, self.margin = baseline, window, margin
        self.recent: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        self.recent.clear()

    def update(self, confidence: float) -> Signal:
        self.recent.append(confidence)
        if len(self.recent) < self.window:
            return Signal(self.name, False, 0.0, self.margin)
        if self.baseline is None:
            self.baseline = float(np.mean(self.recent))
            self.recent.clear()
            return Signal(self.name, False, 0.0, self.margin)
        drop = self.baseline - float(np.mean(self.recent))
        fired = drop > self.margin
        reason = (f"champion confidence fell to {self.baseline - drop:.3f} (golden set {self.baseline:.3f}) over the last "
                  f"{self.window} events, labelled or not" if fired else "")
        return Signal(self.name, fired, drop, self.margin, reason)


@dataclass(slots=True)
class _Seen:
    expected: float  # calibrated top-class probability: the chance this prediction is right
    predicted: int
    correct: int | None = None  # known once the label matures


class PerformanceEstimate:
    """Estimated (CBPE) and realised accuracy over the same recent traffic window.

    Each traffic event is remembered by id with its calibrated confidence and the class predicted;
    a label that matures while its event is still in the window marks it right or wrong.
    """

    def __init__(self, calibration: Calibration | None, window: int = 1000) -> None:
        self.calibration, self.window = calibration, window  # no calibration (no golden set): raw confidences
        self.events: OrderedDict[str, _Seen] = OrderedDict()

    def observe(self, event_id: str, confidence: float, predicted: int) -> None:
        expected = confidence if self.calibration is None else float(self.calibration(np.array([confidence]))[0])
        self.events[event_id] = _Seen(expected, predicted)
        self.events.move_to_end(event_id)
        while len(self.events) > self.window:
            self.events.popitem(last=False)

    def label(self, event_id: str, label: int) -> None:
        entry = self.events.get(event_id)
        if entry is not None:
            entry.correct = 1 if entry.predicted == label else 0

    @property
    def estimated(self) -> float | None:
        return float(np.mean([e.expected for e in self.events.values()])) if self.events else None

    def realised(self, minimum: int = 50) -> float | None:
        """Accuracy on the window's events that have a label (None below ``minimum`` labels)."""
        known = [e.correct for e in self.events.values() if e.correct is not None]
        return float(np.mean(known)) if len(known) >= minimum else None
