"""When the refine → retrain cycle stops (seed ``ConvergenceDetector``), and why.

Rules from the seed: no improvement above ``min_delta`` (0.005) for ``patience`` (3) iterations;
refinement rate below 1 %; prediction variance between members below 5 %. The reason is recorded.
"""

from __future__ import annotations

import math

import numpy as np

from sentiloop.config import ConvergenceConfig


def prediction_variance(member_probabilities: dict[str, np.ndarray]) -> float:
    """Share of texts on which the members do not all predict the same label (0 = full agreement).

    The seed's "prediction variance between models < 5 %" is read as a rate, so it compares to 0.05.
    """
    predicted = np.stack([p.argmax(axis=1) for p in member_probabilities.values()])
    if len(predicted) < 2:
        return 0.0
    return float(np.mean(np.any(predicted != predicted[0], axis=0)))


class ConvergenceDetector:
    """Fed one iteration at a time; its rules are ``retrain.convergence``."""

    def __init__(self, config: ConvergenceConfig | None = None) -> None:
        self.config = config or ConvergenceConfig()
        self.best_score = -math.inf
        self.wait = 0

    def check(self, score: float, refinement_rate: float | None = None, variance: float | None = None) -> str | None:
        """Feed one iteration's results; returns the reason to stop, or None to go on."""
        c = self.config
        if score > self.best_score + c.min_delta:
            self.best_score = score
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= c.patience:
                return f"no improvement above {c.min_delta} for {c.patience} iterations (best {self.best_score:.4f})"
        if refinement_rate is not None and refinement_rate < c.min_refinement_rate:
            return f"refinement rate {refinement_rate:.4f} < {c.min_refinement_rate}"
        if variance is not None and variance < c.min_prediction_variance:
            return f"prediction variance between members {variance:.4f} < {c.min_prediction_variance}"
        return None
