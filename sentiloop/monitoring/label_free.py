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

from collections import deque
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


def expected_accuracy(calibration: Calibration | None, confidence: np.ndarray) -> np.ndarray:
    """What each top-class probability says about being right: calibrated, or as it is when there is
    no calibration (a champion without a golden set)."""
    confidence = np.asarray(confidence, dtype=float)
    return confidence if calibration is None else calibration(confidence)


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
class Chunk:
    """``events`` consecutive traffic events: what CBPE expected of them, and what their matured labels say."""

    index: int
    events: int = 0
    expected: float = 0.0  # sum of calibrated top-class probabilities (the calibration in use at the time)
    expected_golden: float = 0.0  # the same with the golden-set calibration only
    labelled: int = 0
    correct: int = 0

    @property
    def estimated(self) -> float | None:
        return self.expected / self.events if self.events else None

    def realised(self, minimum: int) -> float | None:
        return self.correct / self.labelled if self.labelled >= minimum else None

    def as_dict(self, minimum: int) -> dict[str, float | int | None]:
        return {"index": self.index, "events": self.events, "estimated": self.estimated,
                "estimated_golden": self.expected_golden / self.events if self.events else None,
                "labelled": self.labelled, "realised": self.realised(minimum)}


class PerformanceEstimate:
    """CBPE over consecutive chunks of traffic, each compared with its realised accuracy once labels mature.

    Labels come late (often later than a window of traffic lasts), so each chunk's events are
    remembered by id with the class predicted; a label that matures for one of them, however much
    later, counts in *its* chunk. The newest ``keep`` chunks are kept; ``estimated`` is the rolling
    mean over the last ``chunk`` events (the gauge), ``latest_compared`` the newest chunk with enough labels.

    CBPE's weak point is a domain where the champion is confidently wrong: the golden set's
    calibration no longer holds there. With ``recalibrate`` > 0 the calibration is refitted, every
    100 matured labels, on the newest ``recalibrate`` of them (the traffic's own confidence and
    correctness), so once a new domain's labels mature its later chunks are estimated with a
    calibration that knows it. A chunk keeps the estimate it was given when its events arrived;
    ``estimated_golden`` is what the golden-set calibration alone would have said.
    """

    REFIT_EVERY = 100
    MIN_REFIT = 200

    def __init__(self, calibration: Calibration | None, chunk: int = 1000, keep: int = 64, min_labels: int = 30,
                 recalibrate: int = 0) -> None:
        self.golden_calibration = self.calibration = calibration  # no calibration (no golden set): raw confidences
        self.chunk, self.min_labels = chunk, min_labels
        self.chunks: deque[Chunk] = deque([Chunk(0)], maxlen=keep)
        self.seen: dict[str, tuple[Chunk, int, float]] = {}
        self.recent: deque[float] = deque(maxlen=chunk)
        self.matured: deque[tuple[float, int]] = deque(maxlen=max(1, recalibrate))
        self.recalibrate = recalibrate
        self._since_refit = 0

    def observe(self, event_id: str, confidence: float, predicted: int) -> None:
        expected, expected_golden = (float(expected_accuracy(c, np.array([confidence]))[0])
                                     for c in (self.calibration, self.golden_calibration))
        current = self.chunks[-1]
        if current.events >= self.chunk:
            if len(self.chunks) == self.chunks.maxlen:  # the oldest chunk leaves: forget its events
                gone = self.chunks[0]
                self.seen = {k: v for k, v in self.seen.items() if v[0] is not gone}
            current = Chunk(current.index + 1)
            self.chunks.append(current)
        current.events += 1
        current.expected += expected
        current.expected_golden += expected_golden
        self.seen[event_id] = (current, predicted, confidence)
        self.recent.append(expected)

    def label(self, event_id: str, label: int) -> None:
        entry = self.seen.pop(event_id, None)  # a correction later does not count twice
        if entry is None:
            return
        chunk, predicted, confidence = entry
        chunk.labelled += 1
        chunk.correct += int(predicted == label)
        if self.recalibrate:
            self.matured.append((confidence, int(predicted == label)))
            self._since_refit += 1
            if self._since_refit >= self.REFIT_EVERY and len(self.matured) >= self.MIN_REFIT:
                pairs = np.array(self.matured, dtype=float)
                self.calibration, self._since_refit = Calibration.fit(pairs[:, 0], pairs[:, 1]), 0

    @property
    def estimated(self) -> float | None:
        return float(np.mean(self.recent)) if self.recent else None

    def latest_compared(self) -> Chunk | None:
        """The newest chunk whose labels are enough to compare the estimate with (None before any)."""
        return next((c for c in reversed(self.chunks) if c.realised(self.min_labels) is not None), None)

    def report(self) -> list[dict[str, float | int | None]]:
        return [c.as_dict(self.min_labels) for c in self.chunks]


@dataclass(frozen=True)
class LabelFreeCalibration:
    """Thresholds for the label-free signals from a stable stretch (see ``calibrate_label_free``)."""

    prediction_threshold: float
    confidence_margin: float
    prediction_stable_max: float
    confidence_stable_max: float


def calibrate_label_free(stable: np.ndarray, golden: np.ndarray, window: int, *, margin: float = 1.2, replicas: int = 20,
                         seed: int = 0) -> LabelFreeCalibration:
    """``retrain.drift.prediction_threshold`` and ``confidence_margin`` from the champion's probabilities on
    a stable stretch of traffic (``stable``) and on its golden set (``golden``, the daemon's baseline).

    The same procedure as ``drift.calibrate``: a stable stream is exchangeable, so the largest statistic
    over shuffled replicas of it, times ``margin``, is a threshold that stable traffic does not cross.
    """
    from sentiloop.monitoring.drift import jensen_shannon

    classes = stable.shape[1]
    reference = np.bincount(golden.argmax(axis=1), minlength=classes).astype(float)
    baseline = float(golden.max(axis=1).mean())
    predicted, confidence = stable.argmax(axis=1), stable.max(axis=1)
    rng = np.random.default_rng(seed)
    js_max, drop_max = 0.0, 0.0
    for _ in range(replicas):
        order = rng.permutation(len(stable))
        for start in range(0, len(stable) - window + 1, max(1, window // 2)):
            chosen = order[start : start + window]
            js_max = max(js_max, jensen_shannon(reference, np.bincount(predicted[chosen], minlength=classes).astype(float)))
            drop_max = max(drop_max, baseline - float(confidence[chosen].mean()))
    return LabelFreeCalibration(max(0.02, js_max * margin), max(0.01, drop_max * margin), js_max, drop_max)
