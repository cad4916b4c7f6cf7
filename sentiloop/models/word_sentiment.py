"""The word-sentiment member: a dictionary word → polarity score that learns event by event.

Seed rule (section 4): a known word moves to ``(1-α)·old + α·target`` (α = 0.3), where target is
the polarity of the event's label; a new word enters once it has been seen ``min_count`` times,
with the mean of its targets. Each event counts a word once, however often it repeats in the text.
State is plain data (JSON-serialisable), never pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentiloop.errors import CheckpointError
from sentiloop.models.tokenize import Tokenizer, get_tokenizer


@dataclass(slots=True)
class WordEntry:
    """A word in the dictionary: its score and how many labelled events have updated it."""

    score: float
    updates: int


@dataclass(slots=True)
class PendingWord:
    """A word seen fewer than ``min_count`` times: the sum of its targets so far."""

    count: int
    total: float


@dataclass
class DictionaryChanges:
    """Words whose stored row must be written after ``learn_one`` calls (deduplicated by word)."""

    words: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.words.clear()
        self.pending.clear()


class WordSentimentModel:
    """Online word-sentiment dictionary with a soft class assignment for ensemble voting."""

    name = "word_sentiment"

    def __init__(
        self,
        polarities: Sequence[float],
        alpha: float = 0.3,
        min_count: int = 2,
        tokenizer: str = "regex",
        temperature: float = 0.75,
    ) -> None:
        if len(polarities) < 2:
            raise ValueError("needs at least two classes")
        self.polarities = np.asarray(polarities, dtype=np.float64)
        self.alpha = alpha
        self.min_count = min_count
        self.tokenizer_name = tokenizer
        self.tokenize: Tokenizer = get_tokenizer(tokenizer)
        self.temperature = temperature
        self.words: dict[str, WordEntry] = {}
        self.pending: dict[str, PendingWord] = {}
        self.changes = DictionaryChanges()

    # -- learning -----------------------------------------------------------------------------
    def learn_one(self, text: str, label: int, weight: float = 1.0) -> None:
        """Apply one labelled event; the touched words are recorded in ``self.changes``."""
        self.learn_tokens(set(self.tokenize(text)), label, weight)

    def learn_tokens(self, words: set[str], label: int, weight: float = 1.0) -> None:
        """``learn_one`` for an already tokenised event (each word counts once).

        ``weight`` < 1 (a doubtful, down-weighted label) shrinks the step: α·weight instead of α.
        """
        target = float(self.polarities[label])
        alpha = self.alpha * weight
        keep, step = 1.0 - alpha, alpha * target  # the same floats as (1-α)·old + α·target, computed once per event
        known, pending, min_count = self.words, self.pending, self.min_count
        changed_words, changed_pending = self.changes.words, self.changes.pending  # locals: this runs for every word of every event
        for word in words:
            entry = known.get(word)
            if entry is not None:
                entry.score = keep * entry.score + step
                entry.updates += 1
                changed_words.add(word)
                continue
            seen = pending.get(word)
            if seen is None:
                seen = pending[word] = PendingWord(0, 0.0)
            seen.count += 1
            seen.total += target
            if seen.count >= min_count:
                known[word] = WordEntry(seen.total / seen.count, seen.count)
                del pending[word]
                changed_words.add(word)
            changed_pending.add(word)

    def fit(self, texts: Iterable[str], labels: Iterable[int]) -> WordSentimentModel:
        """Batch learning = the same online rule applied in order (so batch and stream agree)."""
        for text, label in zip(texts, labels):
            self.learn_one(text, int(label))
        self.changes.clear()
        return self

    def seed(self, lexicon: dict[str, float]) -> int:
        """Add words from a seed lexicon (already scaled to the polarity range) that are not known yet."""
        added = 0
        for word, score in lexicon.items():
            if word not in self.words:
                self.words[word] = WordEntry(float(score), 0)
                self.pending.pop(word, None)
                self.changes.words.add(word)
                added += 1
        return added

    # -- prediction ---------------------------------------------------------------------------
    def score_text(self, text: str) -> float | None:
        """Mean score of the known words in ``text``; None when no word is known."""
        scores = [self.words[w].score for w in self.tokenize(text) if w in self.words]
        return float(np.mean(scores)) if scores else None

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) class probabilities: a Gaussian soft assignment of the text score to class polarities."""
        out = np.full((len(texts), len(self.polarities)), 1.0 / len(self.polarities))
        for i, text in enumerate(texts):
            score = self.score_text(text)
            if score is None:
                continue
            logits = -((score - self.polarities) ** 2) / (2.0 * self.temperature**2)
            logits -= logits.max()
            weights = np.exp(logits)
            out[i] = weights / weights.sum()
        return out

    # -- state --------------------------------------------------------------------------------
    def load_state(self, words: dict[str, WordEntry], pending: dict[str, PendingWord]) -> None:
        self.words = words
        self.pending = pending
        self.changes.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "sentiloop.word_sentiment/1",
            "alpha": self.alpha,
            "min_count": self.min_count,
            "tokenizer": self.tokenizer_name,
            "temperature": self.temperature,
            "polarities": self.polarities.tolist(),
            "words": {w: {"score": e.score, "updates": e.updates} for w, e in sorted(self.words.items())},
            "pending": {w: {"count": p.count, "total": p.total} for w, p in sorted(self.pending.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordSentimentModel:
        """Rebuild from ``to_dict`` output; raises KeyError/TypeError/ValueError on a malformed dict."""
        if data.get("format") != "sentiloop.word_sentiment/1":
            raise CheckpointError(f"unknown dictionary format {data.get('format')!r}")
        model = cls(
            polarities=[float(p) for p in data["polarities"]],
            alpha=float(data["alpha"]),
            min_count=int(data["min_count"]),
            tokenizer=str(data["tokenizer"]),
            temperature=float(data["temperature"]),
        )
        words = {str(w): WordEntry(float(v["score"]), int(v["updates"])) for w, v in data["words"].items()}
        pending = {str(w): PendingWord(int(v["count"]), float(v["total"])) for w, v in data["pending"].items()}
        model.load_state(words, pending)
        return model
