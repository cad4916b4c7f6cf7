"""The ``Member`` seam: one ensemble model, whatever its kind (cf. River's uniform verbs).

Every member predicts class probabilities for texts, learns from (texts, labels), and saves to / loads
from a directory through :mod:`sentiloop.models.checkpoint` (safetensors + JSON + sha256 manifest).
What only some members can do is an optional capability protocol, checked with ``isinstance``:
``WarmStartable`` (a cheaper retrain from the champion), ``HasVocabulary`` (the words it knows and the
tokenizer that splits them, for the OOV drift signal) and ``HasOptimizerState`` (kept in checkpoints).
Which members exist is :mod:`sentiloop.models.registry`'s job.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sentiloop.config import ModelsConfig, RetrainConfig, Settings
    from sentiloop.models.torch_common import OptimizerState


@dataclass(frozen=True)
class TrainData:
    """Texts and label indices for one split, with an optional per-example weight and domain."""

    texts: Sequence[str]
    labels: np.ndarray
    weights: np.ndarray | None = None
    domains: Sequence[str] | None = None
    replay: np.ndarray | None = None  # rows of old data replayed against forgetting (a warm start distils the champion on them)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.replay is not None and len(self.replay) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.replay)} replay marks")

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
    # The returned model's predict_proba on the validation split, when training computed it anyway
    # (early stopping scores every check): the retrain cycle then needs no second pass over it.
    validation_probabilities: np.ndarray | None = None


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

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelsConfig) -> Member:
        """A fresh, untrained member configured from its own section of ``models`` (or ``settings``)."""


@dataclass(frozen=True)
class WarmStart:
    """What a warm-start retrain is given: the retrain settings, and where it may keep backups."""

    retrain: RetrainConfig
    iteration: int
    backup_dir: Path


@runtime_checkable
class WarmStartable(Protocol):
    """A member that retrains from itself (the champion) more cheaply than from scratch."""

    def warm_start(self, train: TrainData, validation: TrainData, budget: WarmStart) -> tuple[Member, FitReport]:
        """A new challenger member and its fit report; ``self`` is left untouched (it keeps serving)."""


@runtime_checkable
class HasVocabulary(Protocol):
    """A member that knows a set of words, split by its own tokenizer."""

    @property
    def tokenizer_name(self) -> str:
        """The name of the tokenizer that built the vocabulary (``regex``, ``kiwi``)."""

    def known_words(self) -> Collection[str]:
        """Every word the member has a representation for."""

    def tokenize(self, text: str) -> list[str]:
        """``text`` split exactly the way the member splits it."""


@runtime_checkable
class HasOptimizerState(Protocol):
    """A member whose optimizer state (moments, step counts) is worth keeping with a checkpoint."""

    def optimizer_state(self) -> OptimizerState | None:
        """(tensors by parameter name, JSON meta), or None before the member has trained."""
