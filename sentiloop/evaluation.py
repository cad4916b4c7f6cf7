"""Classification metrics reported by ``sentiloop eval`` and used by the promotion gate.

Plain numpy so the numbers are easy to audit: accuracy, macro-F1, per-class F1, per-domain
accuracy and expected calibration error (ECE, equal-width confidence bins).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label (NaN for no rows)."""
    return float(np.mean(probabilities.argmax(axis=1) == labels)) if len(labels) else float("nan")


def class_f1(predicted: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """F1 of class ``c`` along the last axis (one sample, or a stack of bootstrap resamples); 0 if undefined."""
    p, y = predicted == c, labels == c
    tp, fp, fn = (p & y).sum(-1), (p & ~y).sum(-1), (~p & y).sum(-1)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def per_class_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array([class_f1(predicted, labels, c) for c in range(num_classes)], dtype=float)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy − confidence| over confidence bins, weighted by how many predictions fall in each."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(
    probabilities: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    domains: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Everything ``sentiloop eval`` prints for one model on one split."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    f1 = per_class_f1(labels, predicted, len(label_names))
    report: dict[str, Any] = {
        "n": len(labels),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class_f1": {name: float(value) for name, value in zip(label_names, f1)},
        "ece": expected_calibration_error(probabilities, labels) if len(labels) else 0.0,
    }
    if domains is not None:
        domain_array = np.asarray(domains)
        report["per_domain_accuracy"] = {
            str(d): float(np.mean(predicted[domain_array == d] == labels[domain_array == d])) for d in sorted(set(domains))
        }
    return report
