"""Training plumbing every gradient-trained member shares, whatever its framework (torch or Keras).

Batching, the early-stopping rule, the champion's answers on replayed rows and the optimizer-state
record are plain numpy here, so the Keras member needs no torch and the torch members no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from sentiloop.config import DistillationConfig
from sentiloop.models.base import TrainData
from sentiloop.models.scores import Scorer


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches over ``n`` items, shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Batches of similar length for inference: far less padding, same results."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@dataclass
class Patience:
    """The early-stopping rule: stop once the validation loss has not improved (by 1e-4) ``patience`` times."""

    patience: int
    best: float = math.inf
    bad_checks: int = 0

    def improved(self, loss: float) -> bool:
        """Record one validation loss; True when it is the best so far (the caller keeps that state)."""
        if loss < self.best - 1e-4:
            self.best, self.bad_checks = loss, 0
            return True
        self.bad_checks += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.bad_checks > self.patience

    @property
    def best_loss(self) -> float | None:
        return self.best if math.isfinite(self.best) else None


def replay_answers(champion: Scorer, train: TrainData, distillation: DistillationConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """``champion``'s probabilities on ``train``'s replayed rows (zeros elsewhere) and the replay mask.

    None when there is nothing to distil: no replayed rows, or distillation switched off. A
    member's training loop turns them into its framework's distillation loss (learning without forgetting).
    """
    if distillation.weight == 0 or train.replay is None or not train.replay.any():
        return None
    rows = np.flatnonzero(train.replay)
    answers = np.asarray(champion.predict_proba([train.texts[int(i)] for i in rows]), dtype=np.float32)
    probabilities = np.zeros((len(train), answers.shape[1]), dtype=np.float32)
    probabilities[rows] = answers
    return probabilities, np.asarray(train.replay, dtype=bool)


class OptimizerState(NamedTuple):
    """Optimizer state keyed by name: arrays for safetensors, the rest JSON-able (no pickle)."""

    tensors: dict[str, np.ndarray]
    meta: dict[str, Any]
