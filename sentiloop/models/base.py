"""The ``Member`` seam: one ensemble model, whatever its kind (cf. River's uniform verbs).

Every member predicts class probabilities for texts, learns from (texts, labels), and saves to / loads
from a directory through :mod:`sentiloop.models.checkpoint` (safetensors + JSON + sha256 manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

MEMBER_NAMES = ("bert", "bilstm", "lstm", "word_sentiment")


@dataclass(frozen=True)
class TrainData:
    """Texts and label indices for one split, with an optional per-example weight and domain."""

    texts: Sequence[str]
    labels: np.ndarray
    weights: np.ndarray | None = None
    domains: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class FitReport:
    """What a ``fit`` did: steps, epochs, the best validation loss, and why it stopped."""

    steps: int = 0
    epochs: int = 0
    best_val_loss: float | None = None
    stopped: str = "completed"
    history: list[dict[str, float]] = field(default_factory=list)


@runtime_checkable
class Member(Protocol):
    """One ensemble model. ``kind`` names its implementation in checkpoints."""

    kind: ClassVar[str]
    num_classes: int

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_classes) probabilities, rows summing to 1."""

    def fit(self, train: TrainData, validation: TrainData | None = None) -> FitReport:
        """Train on ``train``; ``validation`` drives early stopping or calibration where used."""

    def save(self, directory: Path) -> None:
        """Write the member to ``directory`` (created); files listed in a sha256 manifest."""

    @classmethod
    def load(cls, directory: Path) -> Member:
        """Read a member written by ``save``; refuses tampered or truncated files."""
