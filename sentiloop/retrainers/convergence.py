"""When the refine → retrain cycle stops (seed ``ConvergenceDetector``), and why.

Rules from the seed: no improvement above ``min_delta`` (0.005) for ``patience`` (3) iterations;
refinement rate below 1 %; prediction variance between members below 5 %. The reason is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def prediction_variance(member_probabilities: dict[str, np.ndarray]) -> float:
    """Share of texts on which the members do not all predict the same label (0 = full agreement).

    The seed's "prediction variance between models < 5 %" is read as a rate, so it compares to 0.05.
    """
    predicted = np.stack([p.argmax(axis=1) for p in member_probabilities.values()])
    if len(predicted) < 2:
        return 0.0
    return float(np.mean(np.any(predicted != predicted[0], axis=0)))


@dataclass
class ConvergenceDetector:
    patience: int = 3
    min_delta: float = 0.005
    min_refinement_rate: float = 0.01
    min_prediction_variance: float = 0.05
    best_score: float = -math.inf
    wait: int = 0

    def check(self, score: float, refinement_rate: float | None = None, variance: float | None = None) -> str | None:
        """Feed one iteration's results; returns the reason to stop, or None to go on."""
        if score > self.best_score + self.min_delta:
            self.best_score = score
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                return f"no improvement above {self.min_delta} for {self.patience} iterations (best {self.best_score:.4f})"
        if refinement_rate is not None and refinement_rate < self.min_refinement_rate:
            return f"refinement rate {refinement_rate:.4f} < {self.min_refinement_rate}"
        if variance is not None and variance < self.min_prediction_variance:
            return f"prediction variance between members {variance:.4f} < {self.min_prediction_variance}"
        return None
