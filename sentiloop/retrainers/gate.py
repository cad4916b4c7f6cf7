"""The promotion gate: a challenger replaces the champion only if it is really better.

(a) the recent-feedback holdout (never trained on) must improve by at least ``min_delta``;
(b) the golden set from the original distribution must not lose more than ``golden_tolerance``
    (the forgetting check) against the champion, or against the best golden accuracy its lineage
    reached (``golden_reference``), so forgetting cannot accumulate over promotions that each lose
    a little; (c) no class may lose more than ``class_tolerance`` F1 on the golden set,
    beyond sampling noise. F1, not recall: recall alone rewards over-predicting a class, so a
    champion biased toward one class would veto every better-balanced challenger, while F1 drops
    when a class collapses (recall) or gets swamped (precision). A small class's F1 moves by
    several points between two equally good models, so a drop counts only when it also exceeds
    ``class_z`` standard errors (paired bootstrap over the golden examples).
Every failed rule is a recorded reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sentiloop.config import GateSettings
from sentiloop.evaluation import accuracy, class_f1
from sentiloop.retrainers.results import GOLDEN, RECENT, GateMetrics


@dataclass
class GateResult:
    promote: bool
    metrics: GateMetrics
    reasons: list[str] = field(default_factory=list)


BOOTSTRAP_RESAMPLES = 200


def class_f1_drops(before: np.ndarray, after: np.ndarray, labels: np.ndarray, num_classes: int,
                   seed: int = 0) -> list[tuple[float, float]]:
    """Per class: (F1 drop from ``before`` to ``after`` predictions, its paired-bootstrap standard error)."""
    index = np.random.default_rng(seed).integers(0, len(labels), (BOOTSTRAP_RESAMPLES, len(labels)))
    drops = []
    for c in range(num_classes):
        resampled = class_f1(before[index], labels[index], c) - class_f1(after[index], labels[index], c)
        drops.append((float(class_f1(before, labels, c) - class_f1(after, labels, c)), float(resampled.std())))
    return drops


def promotion_gate(
    champion_golden: np.ndarray, challenger_golden: np.ndarray, golden_labels: np.ndarray,
    champion_recent: np.ndarray, challenger_recent: np.ndarray, recent_labels: np.ndarray,
    config: GateSettings | None = None, golden_reference: float | None = None,
) -> GateResult:
    """Judge a challenger (``retrain.gate``); ``golden_reference`` is the best golden accuracy of the
    champion's lineage, when the golden set is fixed (else the champion's own is the bar)."""
    config = config or GateSettings()
    champion_golden_accuracy = accuracy(champion_golden, golden_labels)
    reference = max(champion_golden_accuracy, golden_reference or 0.0)
    metrics = GateMetrics(
        accuracy={"champion": {GOLDEN: champion_golden_accuracy, RECENT: accuracy(champion_recent, recent_labels)},
                  "challenger": {GOLDEN: accuracy(challenger_golden, golden_labels), RECENT: accuracy(challenger_recent, recent_labels)}},
        recent_holdout_size=len(recent_labels), golden_reference=reference)
    reasons = []
    if len(recent_labels) < config.min_holdout:
        reasons.append(f"recent holdout has {len(recent_labels)} labelled events, the gate needs {config.min_holdout}")
    else:
        gain = metrics.gain(RECENT)
        if gain < config.min_delta:
            reasons.append(f"recent-holdout accuracy gain {gain:+.4f} < min_delta {config.min_delta}")
    loss = reference - metrics.of("challenger", GOLDEN)
    if loss > config.golden_tolerance:
        against = "the champion" if reference == champion_golden_accuracy else "the lineage's best"
        reasons.append(f"golden-set accuracy {loss:.4f} below {against} > tolerance {config.golden_tolerance} (forgetting)")
    drops = class_f1_drops(champion_golden.argmax(axis=1), challenger_golden.argmax(axis=1), golden_labels,
                           champion_golden.shape[1]) if len(golden_labels) else []
    for c, (drop, noise) in enumerate(drops):
        if drop > config.class_tolerance and drop > config.class_z * noise:
            reasons.append(f"class {c} F1 on the golden set dropped {drop:.4f} > {config.class_tolerance} "
                           f"({drop / noise if noise else float('inf'):.1f} standard errors, n={int(np.sum(golden_labels == c))})")
    return GateResult(promote=not reasons, reasons=reasons, metrics=metrics)
