"""The word-sentiment dictionary as an ensemble member, with probabilities calibrated on validation.

The dictionary gives a text a few numbers (mean/min/max word score, how many words it knows); a
small multinomial logistic map fitted on the validation split turns them into class probabilities,
so its votes are as confident as it is accurate. State is JSON only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sentiloop.files import atomic_write_json, read_json
from sentiloop.models.base import FitReport, TrainData, WarmStart
from sentiloop.models.checkpoint import verify_member_dir, write_json, write_member_dir
from sentiloop.models.lexicon import load_seed_lexicon
from sentiloop.models.word_sentiment import WordSentimentModel

NEGATIONS = frozenset({"not", "no", "never", "nothing", "none", "nor", "cannot", "without", "hardly", "n't"})
N_FEATURES = 12
MIN_RECALIBRATION = 1000  # held-out examples needed before a warm start refits the calibration map

if TYPE_CHECKING:
    from sentiloop.config import ModelsConfig, Settings


def text_features(model: WordSentimentModel, texts: Sequence[str]) -> np.ndarray:
    """Numbers the calibration map reads from the dictionary for each text.

    Frequent words (the, a, movie) get noisy scores under the 0.7/0.3 rule, so besides the plain mean
    the features weight each word by an IDF-like log(1 + total/updates) and count strong words.
    """
    total = 1 + sum(entry.updates for entry in model.words.values()) / max(1, len(model.words))
    features = np.zeros((len(texts), N_FEATURES))
    for i, text in enumerate(texts):
        tokens = model.tokenize(text)
        known = [model.words[t] for t in tokens if t in model.words]
        negated = float(any(t in NEGATIONS or t.endswith("n't") for t in tokens))
        if not known:
            features[i, -1] = negated
            continue
        scores = np.array([entry.score for entry in known])
        idf = np.log1p(total / (1.0 + np.array([entry.updates for entry in known])))
        features[i] = (
            scores.mean(), scores.min(), scores.max(), (scores * idf).sum() / idf.sum(),
            scores[scores > 0].sum(), scores[scores < 0].sum(), np.sum(scores > 1.0), np.sum(scores < -1.0),
            len(scores) / max(1, len(tokens)), np.log1p(len(scores)), 1.0, negated,
        )
    return features


def _vader_features(texts: Sequence[str]) -> np.ndarray:
    """VADER's rule-based scores (negation, intensifiers, punctuation) over its own seed lexicon."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    rows = [analyzer.polarity_scores(text) for text in texts]
    return np.array([[r["compound"], r["pos"], r["neg"], r["neu"]] for r in rows])


class WordSentimentMember:
    """Member wrapper: dictionary learning (seed rule) + a calibration map."""

    kind: ClassVar[str] = "word_sentiment"

    def __init__(self, polarities: Sequence[float], alpha: float = 0.3, min_count: int = 2, tokenizer: str = "regex",
                 seed_lexicon: str = "vader") -> None:
        self.model = WordSentimentModel(polarities, alpha=alpha, min_count=min_count, tokenizer=tokenizer)
        self.seed_lexicon = seed_lexicon
        self.num_classes = len(polarities)
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.prior: np.ndarray | None = None  # class frequencies: the answer when no word is known

    @classmethod
    def from_model(cls, model: WordSentimentModel, seed_lexicon: str = "none") -> WordSentimentMember:
        """Wrap an existing dictionary (e.g. the daemon's live one)."""
        member = cls(model.polarities.tolist(), model.alpha, model.min_count, model.tokenizer_name, seed_lexicon)
        member.model = model
        return member

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelsConfig) -> WordSentimentMember:
        d = settings.dictionary
        return cls(settings.polarities, d.alpha, d.min_count, d.tokenizer, models.word_sentiment_lexicon)

    def warm_start(self, train: TrainData, validation: TrainData, budget: WarmStart) -> tuple[WordSentimentMember, FitReport]:
        """The seed's incremental update on a copy (0.7·old + 0.3·new per word), with a JSON backup.

        A down-weighted (doubtful) label moves words less; a small validation fold would over-fit the
        calibration map, so below ``MIN_RECALIBRATION`` examples the champion's map is kept.
        """
        challenger = copy.deepcopy(self)
        weights = train.weights if train.weights is not None else np.ones(len(train))
        for text, label, weight in zip(train.texts, train.labels, weights):
            challenger.model.learn_one(text, int(label), float(weight))
        challenger.model.changes.clear()
        if len(validation) >= MIN_RECALIBRATION:
            challenger.calibrate(validation)
        atomic_write_json(budget.backup_dir / f"word_sentiment_dict_iter_{budget.iteration}.json", challenger.model.to_dict())
        return challenger, FitReport(steps=len(train), epochs=1)

    # -- HasVocabulary --------------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return self.model.tokenizer_name

    def known_words(self) -> list[str]:
        return list(self.model.words)

    def tokenize(self, text: str) -> list[str]:
        return self.model.tokenize(text)

    def fit(self, train: TrainData, validation: TrainData | None = None) -> FitReport:
        """Seed from the lexicon, learn the training texts in order, then calibrate on validation."""
        self.model.seed(load_seed_lexicon(self.seed_lexicon, self.model.polarities.tolist()))
        self.model.fit(train.texts, train.labels)
        self.calibrate(validation if validation is not None else train)
        return FitReport(steps=len(train), epochs=1)

    def calibrate(self, data: TrainData) -> None:
        """Fit the features → class map on ``data`` (held-out, so calibration is honest)."""
        from sklearn.linear_model import LogisticRegression

        features = self._features(data.texts)
        classifier = LogisticRegression(max_iter=2000, C=1.0)
        classifier.fit(features, data.labels)
        coef = np.zeros((self.num_classes, features.shape[1]))
        intercept = np.full(self.num_classes, -1e3)  # classes absent from `data` get ~0 probability
        for row, cls in enumerate(classifier.classes_):
            if len(classifier.classes_) == 2:  # sklearn's binary case has one row
                coef[cls] = classifier.coef_[0] * (1 if row == 1 else -1) / 2
                intercept[cls] = classifier.intercept_[0] * (1 if row == 1 else -1) / 2
            else:
                coef[cls], intercept[cls] = classifier.coef_[row], classifier.intercept_[row]
        self.coef, self.intercept = coef, intercept
        counts = np.bincount(np.asarray(data.labels), minlength=self.num_classes).astype(float) + 1.0
        self.prior = counts / counts.sum()

    def _features(self, texts: Sequence[str]) -> np.ndarray:
        features = text_features(self.model, texts)
        if self.seed_lexicon == "vader":
            features = np.hstack([features, _vader_features(texts)])
        return features

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.coef is None or self.intercept is None:
            return self.model.predict_proba(texts)  # uncalibrated: the Gaussian soft assignment
        features = self._features(texts)
        logits = features @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        if self.prior is not None:
            # No known word (and no VADER evidence): the map would extrapolate to a confident guess;
            # answer with the class prior ("don't know") instead.
            unknown = features[:, N_FEATURES - 2] == 0
            if features.shape[1] > N_FEATURES:
                unknown &= features[:, N_FEATURES] == 0  # VADER compound
            probabilities[unknown] = self.prior
        return probabilities

    def save(self, directory: Path) -> None:
        def write(tmp: Path) -> None:
            write_json(tmp, "dictionary.json", self.model.to_dict())
            write_json(tmp, "member.json", {
                "kind": self.kind, "num_classes": self.num_classes, "seed_lexicon": self.seed_lexicon,
                "coef": None if self.coef is None else self.coef.tolist(),
                "intercept": None if self.intercept is None else self.intercept.tolist(),
                "prior": None if self.prior is None else self.prior.tolist(),
            })

        write_member_dir(directory, self.kind, write)

    @classmethod
    def load(cls, directory: Path) -> WordSentimentMember:
        verify_member_dir(directory, cls.kind)
        member = cls.from_model(WordSentimentModel.from_dict(read_json(directory / "dictionary.json")))
        meta = read_json(directory / "member.json")
        member.seed_lexicon = meta["seed_lexicon"]
        if meta["coef"] is not None:
            member.coef, member.intercept = np.array(meta["coef"]), np.array(meta["intercept"])
        if meta.get("prior") is not None:
            member.prior = np.array(meta["prior"])
        return member
