"""Data refinement (seed ``refine_dataset(confidence_threshold=0.8)``).

A reference ensemble scores the training pool; where it disagrees with the given label with
confidence ≥ threshold, the example is flagged and, by config, relabelled, down-weighted or dropped.
The caller must pass probabilities from models that did NOT train on these examples (out-of-fold),
otherwise refinement only echoes the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Action = Literal["flag", "relabel", "downweight", "drop"]


@dataclass
class RefinementResult:
    texts: list[str]
    labels: np.ndarray
    weights: np.ndarray
    domains: list[str]
    flagged: np.ndarray  # over the input pool, before any drop
    refinement_rate: float
    data_quality_score: float
    flagged_per_class: dict[int, int]
    action: str

    def stats(self) -> dict[str, float | int | str]:
        return {"refined_samples": int(self.flagged.sum()), "pool": len(self.flagged), "kept": len(self.texts),
                "refinement_rate": self.refinement_rate, "data_quality_score": self.data_quality_score, "action": self.action}


def apply_action(action: Action, flagged: np.ndarray, predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                 dropped: np.ndarray, downweight: float) -> None:
    """Apply ``action`` in place to the examples at ``flagged`` (a mask or indices into the arrays).

    ``predicted`` holds the reference's label for each flagged example (what ``relabel`` writes);
    ``flag`` only records them. The one place the four actions are defined.
    """
    if action == "relabel":
        labels[flagged] = predicted
    elif action == "downweight":
        weights[flagged] = downweight
    elif action == "drop":
        dropped[flagged] = True


def refine_dataset(
    texts: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    domains: Sequence[str] | None = None,
    confidence_threshold: float = 0.8,
    action: Action = "downweight",
    downweight: float = 0.3,
) -> RefinementResult:
    """Flag confident disagreements and apply ``action``.

    ``data_quality_score`` = mean probability the reference gives the stated label divided by the
    mean of its top probability: 1.0 when every label is what the ensemble would have said.
    """
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    flagged = (predicted != labels) & (confidence >= confidence_threshold)
    domains = list(domains) if domains is not None else ["unknown"] * len(texts)
    new_labels, weights, dropped = labels.copy(), np.ones(len(labels)), np.zeros(len(labels), dtype=bool)
    apply_action(action, flagged, predicted[flagged], new_labels, weights, dropped, downweight)
    keep = ~dropped
    given = probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    quality = float(given.mean() / max(1e-12, confidence.mean())) if len(labels) else 1.0
    per_class = {int(c): int(np.sum(flagged & (labels == c))) for c in np.unique(labels)}
    return RefinementResult(
        texts=[t for t, k in zip(texts, keep) if k],
        labels=new_labels[keep],
        weights=weights[keep],
        domains=[d for d, k in zip(domains, keep) if k],
        flagged=flagged,
        refinement_rate=float(flagged.mean()) if len(flagged) else 0.0,
        data_quality_score=quality,
        flagged_per_class=per_class,
        action=action,
    )
