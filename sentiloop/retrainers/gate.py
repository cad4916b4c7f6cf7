"""The promotion gate: a challenger replaces the champion only if it is really better.

(a) the recent-feedback holdout (never trained on) must improve by at least ``min_delta``;
(b) the golden set from the original distribution must not lose more than ``golden_tolerance``
    (the forgetting check); (c) no class may lose more than ``class_tolerance`` recall on the golden
    set, beyond sampling noise: a small class's recall moves by several points between two equally
    good models, so a drop counts only when it also exceeds ``class_z`` paired standard errors
    (McNemar-style, from the examples one model gets right and the other wrong).
Every failed rule is a recorded reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GateConfig:
    min_delta: float = 0.005
    golden_tolerance: float = 0.01
    class_tolerance: float = 0.05
    min_holdout: int = 50
    class_z: float = 1.645


@dataclass
class GateResult:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels)) if len(labels) else float("nan")


def paired_drop(before_right: np.ndarray, after_right: np.ndarray) -> tuple[float, float]:
    """(accuracy drop, its standard error) for two models judged on the same examples."""
    n = len(before_right)
    if not n:
        return 0.0, 0.0
    lost = int(np.sum(before_right & ~after_right))
    gained = int(np.sum(~before_right & after_right))
    drop = (lost - gained) / n
    return drop, float(np.sqrt(max(lost + gained - (lost - gained) ** 2 / n, 0.0))) / n


def promotion_gate(
    champion_golden: np.ndarray, challenger_golden: np.ndarray, golden_labels: np.ndarray,
    champion_recent: np.ndarray, challenger_recent: np.ndarray, recent_labels: np.ndarray,
    config: GateConfig = GateConfig(),
) -> GateResult:
    metrics = {
        "champion_golden_accuracy": _accuracy(champion_golden, golden_labels),
        "challenger_golden_accuracy": _accuracy(challenger_golden, golden_labels),
        "champion_recent_accuracy": _accuracy(champion_recent, recent_labels),
        "challenger_recent_accuracy": _accuracy(challenger_recent, recent_labels),
        "recent_holdout_size": float(len(recent_labels)),
    }
    reasons = []
    if len(recent_labels) < config.min_holdout:
        reasons.append(f"recent holdout has {len(recent_labels)} labelled events, the gate needs {config.min_holdout}")
    else:
        gain = metrics["challenger_recent_accuracy"] - metrics["champion_recent_accuracy"]
        if gain < config.min_delta:
            reasons.append(f"recent-holdout accuracy gain {gain:+.4f} < min_delta {config.min_delta}")
    loss = metrics["champion_golden_accuracy"] - metrics["challenger_golden_accuracy"]
    if loss > config.golden_tolerance:
        reasons.append(f"golden-set accuracy dropped {loss:.4f} > tolerance {config.golden_tolerance} (forgetting)")
    before_right = champion_golden.argmax(axis=1) == golden_labels
    after_right = challenger_golden.argmax(axis=1) == golden_labels
    for c in range(champion_golden.shape[1]):
        in_class = golden_labels == c
        drop, noise = paired_drop(before_right[in_class], after_right[in_class])
        if drop > config.class_tolerance and drop > config.class_z * noise:
            reasons.append(f"class {c} recall on the golden set dropped {drop:.4f} > {config.class_tolerance} "
                           f"({drop / noise if noise else float('inf'):.1f} standard errors, n={int(in_class.sum())})")
    return GateResult(promote=not reasons, reasons=reasons, metrics=metrics)
