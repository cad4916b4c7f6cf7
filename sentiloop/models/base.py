"""The ``Member`` seam: one ensemble model, whatever its kind (cf. River's uniform verbs).

Every member predicts class probabilities for texts, learns from (texts, labels), and saves to / loads
from a directory through :mod:`sentiloop.models.checkpoint` (safetensors + JSON + sha256 manifest).
What only some members can do is an optional capability protocol, checked with ``isinstance``:
``WarmStartable`` (a cheaper retrain from the champion), ``HasVocabulary`` (the words it knows and the
tokenizer that splits them, for the OOV drift signal), ``HasPretrainedTokenizer`` (a fixed vocabulary whose
coverage says whether the member can read a language) and ``HasOptimizerState`` (kept in
checkpoints).
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
    from sentiloop.models.fitting import OptimizerState


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


@dataclass(frozen=True)
class TokenizerFit:
    """How well a fixed (pretrained) vocabulary covers some texts."""

    unknown_share: float  # word pieces that are the unknown token
    pieces_per_word: float  # word pieces per whitespace-separated word (English WordPiece on English ≈ 1.5)

    # Beyond either limit the text is mostly unreadable to the encoder. Measured on 2,000 NSMC Korean
    # reviews: MiniLM's English WordPiece vocabulary splits a word into 5.8 pieces (jamo, 6 % [UNK]);
    # a multilingual SentencePiece vocabulary (multilingual-e5-small) into 2.9; English text under MiniLM 1.5.
    UNKNOWN_LIMIT: ClassVar[float] = 0.2
    PIECES_LIMIT: ClassVar[float] = 4.5

    @property
    def unreadable(self) -> bool:
        return self.unknown_share >= self.UNKNOWN_LIMIT or self.pieces_per_word >= self.PIECES_LIMIT

    def describe(self) -> str:
        text = (f"its tokenizer maps {self.unknown_share:.0%} of the word pieces to its unknown token and splits a word "
                f"into {self.pieces_per_word:.1f} pieces on average")
        return text + (": it cannot read this language; choose an encoder that does (models.bert.model)" if self.unreadable else "")


@runtime_checkable
class HasPretrainedTokenizer(Protocol):
    """A member whose vocabulary was fixed before it saw the training data (a pretrained encoder's)."""

    def tokenizer_fit(self, texts: Sequence[str]) -> TokenizerFit:
        """How well the vocabulary covers ``texts``."""


@runtime_checkable
class HasOptimizerState(Protocol):
    """A member whose optimizer state (moments, step counts) is worth keeping with a checkpoint."""

    def optimizer_state(self) -> OptimizerState | None:
        """(tensors by parameter name, JSON meta), or None before the member has trained."""
