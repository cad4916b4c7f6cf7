"""Data-bias checks (seed ``detect_data_bias``): each gives a score in [0, 1]; above 0.7 is a warning.

- label_balance: 1 − normalised entropy of the label distribution (1 = a single label).
- domain_coverage: 1 − normalised entropy over the known domains (1 = everything from one domain).
- refinement_patterns: total-variation distance between the labels of flagged examples and all labels
  (1 = refinement hits one class only).
- model_agreement: share of texts on which all members agree (1 = no diversity left in the ensemble).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BIAS_LIMIT = 0.7


@dataclass(frozen=True)
class BiasCheck:
    name: str
    bias_score: float
    description: str

    @property
    def flagged(self) -> bool:
        return self.bias_score > BIAS_LIMIT


def _normalised_entropy(counts: np.ndarray, categories: int) -> float:
    if categories <= 1 or counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(categories))


def detect_data_bias(
    labels: np.ndarray,
    num_classes: int,
    domains: Sequence[str],
    known_domains: Sequence[str],
    flagged: np.ndarray | None = None,
    member_probabilities: Mapping[str, np.ndarray] | None = None,
) -> list[BiasCheck]:
    labels = np.asarray(labels)
    label_counts = np.bincount(labels, minlength=num_classes).astype(float)
    checks = [BiasCheck("label_distribution", 1 - _normalised_entropy(label_counts, num_classes),
                        f"label counts {label_counts.astype(int).tolist()}")]
    universe = sorted(set(known_domains) | set(domains))
    domain_counts = np.array([sum(d == u for d in domains) for u in universe], dtype=float)
    checks.append(BiasCheck("domain_coverage", 1 - _normalised_entropy(domain_counts, len(universe)),
                            f"domains {dict(zip(universe, domain_counts.astype(int).tolist()))}"))
    if flagged is not None and flagged.any():
        flagged_counts = np.bincount(labels[flagged], minlength=num_classes).astype(float)
        tv = 0.5 * float(np.abs(flagged_counts / flagged_counts.sum() - label_counts / label_counts.sum()).sum())
        checks.append(BiasCheck("refinement_patterns", tv, f"flagged per class {flagged_counts.astype(int).tolist()}"))
    else:
        checks.append(BiasCheck("refinement_patterns", 0.0, "nothing flagged"))
    if member_probabilities and len(member_probabilities) > 1:
        predicted = np.stack([p.argmax(axis=1) for p in member_probabilities.values()])
        agreement = float(np.mean(np.all(predicted == predicted[0], axis=0)))
        checks.append(BiasCheck("model_agreement", agreement, f"all members agree on {agreement:.1%} of texts"))
    return checks
