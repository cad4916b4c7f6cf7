"""Shadow evaluation: a challenger the gate accepted scores live traffic next to the champion before it serves.

The gate judges on stored holdout and golden sets; traffic may already have moved on. In shadow the
challenger sees the same events as the champion (it serves nobody): how often the two agree, the
CBPE-estimated accuracy of each (each calibrated on the golden set), and — for the events whose
labels mature meanwhile — the realised accuracy of each. The verdict promotes the challenger only
if neither figure says it is worse than the champion by more than ``tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentiloop.monitoring.label_free import Calibration, expected_accuracy


@dataclass
class _Pair:
    champion: int
    challenger: int
    label: int | None = None


@dataclass(frozen=True)
class ShadowReport:
    """What a shadow run saw; ``realised`` is None per model until ``min_labels`` labels matured."""

    version: int
    events: int
    agreement: float
    estimated: dict[str, float]
    realised: dict[str, float | None]
    labelled: int

    def verdict(self, tolerance: float) -> list[str]:
        """Reasons to refuse the challenger; empty means promote."""
        reasons = []
        if self.estimated["challenger"] < self.estimated["champion"] - tolerance:
            reasons.append(f"shadow: estimated accuracy {self.estimated['challenger']:.3f} < champion {self.estimated['champion']:.3f} "
                           f"- {tolerance} over {self.events} live events")
        champion, challenger = self.realised["champion"], self.realised["challenger"]
        if champion is not None and challenger is not None and challenger < champion - tolerance:
            reasons.append(f"shadow: realised accuracy {challenger:.3f} < champion {champion:.3f} - {tolerance} "
                           f"on {self.labelled} labels that matured during the shadow run")
        return reasons

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "events": self.events, "agreement": self.agreement, "estimated": self.estimated,
                "realised": self.realised, "labelled": self.labelled}


@dataclass
class ShadowRun:
    """One challenger in shadow until ``events`` traffic events were scored by both."""

    challenger: Any
    version: int
    events: int
    champion_calibration: Calibration | None
    challenger_calibration: Calibration | None
    min_labels: int = 50
    pairs: dict[str, _Pair] = field(default_factory=dict)
    expected: dict[str, list[float]] = field(default_factory=lambda: {"champion": [], "challenger": []})

    @property
    def done(self) -> bool:
        return len(self.pairs) >= self.events

    def observe(self, event_ids: list[str], texts: list[str], champion_probabilities: np.ndarray) -> None:
        """Score traffic with the challenger next to the champion's scores (until ``events`` are seen)."""
        room = self.events - len(self.pairs)
        if room <= 0 or not texts:
            return
        event_ids, texts, champion_probabilities = event_ids[:room], texts[:room], champion_probabilities[:room]
        challenger_probabilities = np.asarray(self.challenger.predict_proba(texts))
        for name, probabilities, calibration in (("champion", champion_probabilities, self.champion_calibration),
                                                 ("challenger", challenger_probabilities, self.challenger_calibration)):
            self.expected[name].extend(expected_accuracy(calibration, probabilities.max(axis=1)).tolist())
        for event_id, a, b in zip(event_ids, champion_probabilities.argmax(axis=1), challenger_probabilities.argmax(axis=1)):
            self.pairs[event_id] = _Pair(int(a), int(b))

    def label(self, event_id: str, label: int) -> None:
        pair = self.pairs.get(event_id)
        if pair is not None:
            pair.label = label

    def report(self) -> ShadowReport:
        labelled = [p for p in self.pairs.values() if p.label is not None]
        enough = len(labelled) >= self.min_labels

        def realised(pick: str) -> float | None:
            return float(np.mean([getattr(p, pick) == p.label for p in labelled])) if enough else None

        agreement = float(np.mean([p.champion == p.challenger for p in self.pairs.values()])) if self.pairs else 0.0
        estimated = {name: float(np.mean(values)) if values else 0.0 for name, values in self.expected.items()}
        return ShadowReport(self.version, len(self.pairs), agreement, estimated,
                            {"champion": realised("champion"), "challenger": realised("challenger")}, len(labelled))
