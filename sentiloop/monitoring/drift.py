"""Drift signals on the labelled feedback stream. Each says *what* changed; policies decide *when* to act.

- ``ErrorRateDrift``: River's ADWIN and Page-Hinkley on the champion's per-event error (was it wrong?).
- ``LabelShiftDrift``: Jensen-Shannon distance between the reference label distribution and a window.
- ``OOVRateDrift``: share of tokens the champion's vocabulary does not know, against its baseline.
River's detectors at their defaults both miss small drifts and re-fire on one change, so thresholds are
calibrated on stable data (see ``calibrate``) and every signal is reset after it fires.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftReference:
    """The baselines of one champion, from its own dataset (see ``continual.drift_reference``)."""

    texts: Sequence[str] = ()  # the OOV-rate baseline
    labels: Sequence[int] = ()  # the label mix it learnt
    golden_texts: Sequence[str] = ()  # scored at swap: calibration, ECE, predicted mix and confidence baselines
    golden_labels: Sequence[int] = ()


@dataclass(frozen=True)
class Signal:
    """One detector's verdict after an update: its statistic, threshold and a human reason."""

    name: str
    fired: bool
    statistic: float
    threshold: float
    reason: str = ""


def page_hinkley_statistic(detector: Any) -> float:
    """River PageHinkley's own test statistic for an increase (it fires when this exceeds its threshold)."""
    return float(detector._sum_increase - detector._min_increase)


class ErrorRateDrift:
    """ADWIN + Page-Hinkley on the 0/1 error stream; fires on an *increase* of the error rate."""

    name = "error_rate"

    def __init__(self, adwin_delta: float = 0.002, ph_threshold: float = 40.0, ph_delta: float = 0.05, min_instances: int = 300) -> None:
        self.adwin_delta, self.ph_threshold, self.ph_delta, self.min_instances = adwin_delta, ph_threshold, ph_delta, min_instances
        self.reset()

    def reset(self) -> None:
        from river import drift

        self.adwin = drift.ADWIN(delta=self.adwin_delta)
        self.page_hinkley = drift.PageHinkley(min_instances=self.min_instances, delta=self.ph_delta, threshold=self.ph_threshold, mode="up")
        self.seen = 0
        self.errors: deque[int] = deque(maxlen=self.min_instances)
        self.baseline: float | None = None

    def update(self, error: bool) -> Signal:
        value = 1 if error else 0
        self.seen += 1
        self.errors.append(value)
        if self.baseline is None and self.seen >= self.min_instances:
            self.baseline = float(np.mean(self.errors))
        before = self.adwin.estimation
        self.adwin.update(value)
        self.page_hinkley.update(value)
        rate = float(np.mean(self.errors)) if self.errors else 0.0
        adwin_up = self.adwin.drift_detected and self.adwin.estimation > before
        fired = self.seen >= self.min_instances and (adwin_up or self.page_hinkley.drift_detected)
        reason = ""
        if fired:
            which = "ADWIN" if adwin_up else "Page-Hinkley"
            reason = f"{which}: champion error rate rose to {rate:.3f} (baseline {self.baseline or 0:.3f}) over the last {len(self.errors)} labelled events"
        return Signal(self.name, fired, rate, self.baseline or 0.0, reason)

    @property
    def page_hinkley_statistic(self) -> float:
        """How close Page-Hinkley is to firing (compare with ``ph_threshold``; 0 before min_instances)."""
        return page_hinkley_statistic(self.page_hinkley) if self.seen >= self.min_instances else 0.0


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JS distance (base 2, in [0, 1]) between two discrete distributions."""
    p = p / p.sum() if p.sum() else np.full_like(p, 1 / len(p))
    q = q / q.sum() if q.sum() else np.full_like(q, 1 / len(q))
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


class LabelShiftDrift:
    """Windowed label-distribution distance to a reference distribution."""

    name = "label_shift"
    subject = "label distribution"

    def __init__(self, num_classes: int, reference: np.ndarray | None = None, window: int = 1000, threshold: float = 0.15) -> None:
        self.num_classes, self.window, self.threshold = num_classes, window, threshold
        self.reference = reference
        self.recent: deque[int] = deque(maxlen=window)

    def reset(self, reference: np.ndarray | None = None) -> None:
        if reference is not None:
            self.reference = reference
        elif len(self.recent) == self.window:
            self.reference = np.bincount(np.array(self.recent), minlength=self.num_classes).astype(float)
        self.recent.clear()

    def update(self, label: int) -> Signal:
        self.recent.append(label)
        if self.reference is None:
            if len(self.recent) == self.window:  # the first full window becomes the reference
                self.reset()
            return Signal(self.name, False, 0.0, self.threshold)
        if len(self.recent) < self.window:
            return Signal(self.name, False, 0.0, self.threshold)
        counts = np.bincount(np.array(self.recent), minlength=self.num_classes).astype(float)
        distance = jensen_shannon(self.reference.astype(float), counts)
        fired = distance > self.threshold
        reason = f"{self.subject} moved: JS distance {distance:.3f} > {self.threshold} over the last {self.window} events" if fired else ""
        return Signal(self.name, fired, distance, self.threshold, reason)


class OOVRateDrift:
    """Share of tokens unknown to the champion, over a window, against the rate on its own data."""

    name = "oov_rate"

    def __init__(self, tokenize: Callable[[str], list[str]], vocabulary: Iterable[str], baseline: float | None,
                 window: int = 1000, margin: float = 0.10) -> None:
        """``baseline`` None: the first full window of the stream becomes the baseline."""
        self.tokenize = tokenize
        self.vocabulary = frozenset(vocabulary)
        self.baseline, self.window, self.margin = baseline, window, margin
        self.recent: deque[tuple[int, int]] = deque(maxlen=window)

    @staticmethod
    def rate(tokenize: Callable[[str], list[str]], vocabulary: frozenset[str] | set[str], texts: Sequence[str]) -> float:
        tokens = [t for text in texts for t in tokenize(text)]
        return sum(t not in vocabulary for t in tokens) / max(1, len(tokens))

    def reset(self) -> None:
        self.recent.clear()

    def update(self, text: str) -> Signal:
        tokens = self.tokenize(text)
        self.recent.append((sum(t not in self.vocabulary for t in tokens), len(tokens)))
        if len(self.recent) < self.window:
            return Signal(self.name, False, 0.0, (self.baseline or 0.0) + self.margin)
        unknown, total = (sum(x) for x in zip(*self.recent))
        value = unknown / max(1, total)
        if self.baseline is None:
            self.baseline = value
            return Signal(self.name, False, value, value + self.margin)
        fired = value > self.baseline + self.margin
        reason = f"out-of-vocabulary rate {value:.3f} > baseline {self.baseline:.3f} + {self.margin}" if fired else ""
        return Signal(self.name, fired, value, self.baseline + self.margin, reason)


@dataclass
class DriftCalibration:
    """Thresholds under which a stable stream raised no alarm, with the maxima they came from."""

    ph_threshold: float
    label_threshold: float
    ph_stable_max: float
    label_stable_max: float
    replicas: int


def _page_hinkley_max(errors: np.ndarray, delta: float, min_instances: int) -> float:
    from river import drift

    ph = drift.PageHinkley(min_instances=min_instances, delta=delta, threshold=float("inf"), mode="up")
    peak = 0.0
    for seen, error in enumerate(errors, start=1):
        ph.update(int(error))
        if seen >= min_instances:
            peak = max(peak, page_hinkley_statistic(ph))
    return peak


def calibrate(stable_errors: Sequence[bool], stable_labels: Sequence[int], num_classes: int, *, window: int = 1000,
              margin: float = 1.2, ph_delta: float = 0.05, min_instances: int = 300, replicas: int = 20,
              seed: int = 0, reference_labels: Sequence[int] | None = None) -> DriftCalibration:
    """Thresholds from a stable stretch: the largest statistic over shuffled replicas of it, times ``margin``.

    A stable stream is exchangeable, so its permutations are equally likely stable streams; taking the
    maximum over ``replicas`` of them estimates how high the statistic goes without any drift.
    ``reference_labels`` is the label mix the daemon compares windows with (the champion's train +
    golden labels); without it, the stretch's own mix.
    """
    rng = np.random.default_rng(seed)
    errors = np.asarray(stable_errors, dtype=int)
    labels = np.asarray(stable_labels, dtype=int)
    base = labels if reference_labels is None else np.asarray(reference_labels, dtype=int)
    ph_max = max(_page_hinkley_max(rng.permutation(errors), ph_delta, min_instances) for _ in range(replicas))
    js_max = 0.0
    if len(labels) >= 2 * window:
        reference = np.bincount(base, minlength=num_classes).astype(float)
        for _ in range(replicas):
            shuffled = rng.permutation(labels)
            for start in range(0, len(shuffled) - window + 1, window // 2):
                counts = np.bincount(shuffled[start : start + window], minlength=num_classes).astype(float)
                js_max = max(js_max, jensen_shannon(reference, counts))
    return DriftCalibration(max(10.0, ph_max * margin), max(0.05, js_max * margin), ph_max, js_max, replicas)
