from pathlib import Path

import numpy as np
import pytest

from sentiloop.errors import CheckpointError
from sentiloop.evaluation import classification_report, expected_calibration_error, per_class_f1
from sentiloop.models.base import TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.registry import in_training_order
from sentiloop.models.store import ModelStore
from sentiloop.models.vote import normalise_weights
from sentiloop.models.word_member import WordSentimentMember

POLARITIES = [-2, -1, 0, 1, 2]
LABELS = ["very_negative", "negative", "neutral", "positive", "very_positive"]
TEXTS = ["awful terrible", "bad dull", "the plot", "good nice", "superb wonderful"] * 20
DATA = TrainData(TEXTS, np.array([0, 1, 2, 3, 4] * 20), domains=["a", "b"] * 50)


class FixedMember:
    """A member that always says the same thing: enough to check the vote arithmetic."""

    kind = "fixed"

    def __init__(self, probabilities: list[float]) -> None:
        self.p = np.array(probabilities)
        self.num_classes = len(probabilities)

    def predict_proba(self, texts):  # type: ignore[no-untyped-def]
        return np.tile(self.p, (len(texts), 1))


def test_weights_renormalise_over_enabled_members() -> None:
    assert normalise_weights({"bert": 0.3, "bilstm": 0.3, "lstm": 0.25, "word_sentiment": 0.15}, ["bert", "lstm"]) == pytest.approx(
        {"bert": 0.3 / 0.55, "lstm": 0.25 / 0.55})
    assert normalise_weights({"a": 0.0}, ["a", "b"]) == {"a": 0.5, "b": 0.5}


def test_soft_vote_is_the_weighted_mean() -> None:
    ensemble = Ensemble({"x": FixedMember([1, 0, 0]), "y": FixedMember([0, 0, 1])}, {"x": 0.75, "y": 0.25}, ["n", "m", "p"])
    assert ensemble.predict_proba(["t"])[0] == pytest.approx([0.75, 0, 0.25])


def test_seed_training_order() -> None:
    assert in_training_order(["bert", "word_sentiment", "lstm", "bilstm"]) == ["word_sentiment", "lstm", "bilstm", "bert"]


def test_word_member_calibrated_round_trip_and_tamper(tmp_path: Path) -> None:
    member = WordSentimentMember(POLARITIES, min_count=1, seed_lexicon="none")
    member.fit(DATA, DATA)
    probabilities = member.predict_proba(["superb wonderful", "awful terrible"])
    assert probabilities.shape == (2, 5) and np.allclose(probabilities.sum(axis=1), 1)
    assert probabilities[0].argmax() == 4 and probabilities[1].argmax() == 0
    ensemble = Ensemble({"word_sentiment": member}, {"word_sentiment": 1.0}, LABELS, metrics={"x": 1},
                        class_bias=[0.5, 0, 0, 0, -0.5])
    ensemble.save(tmp_path / "v1")
    loaded = Ensemble.load(tmp_path / "v1")
    assert np.array_equal(loaded.predict_proba(TEXTS), ensemble.predict_proba(TEXTS))
    assert not np.allclose(loaded.predict_proba(TEXTS), member.predict_proba(TEXTS))  # the bias is applied
    assert loaded.metrics == {"x": 1} and loaded.class_bias == [0.5, 0, 0, 0, -0.5]
    with pytest.raises(CheckpointError, match="never overwritten"):
        ensemble.save(tmp_path / "v1")
    dictionary = tmp_path / "v1" / "members" / "word_sentiment" / "dictionary.json"
    dictionary.write_text(dictionary.read_text().replace('"superb"', '"superB"'))
    with pytest.raises(CheckpointError, match="sha256"):
        Ensemble.load(tmp_path / "v1")
    dictionary.write_text("{")
    with pytest.raises(CheckpointError, match="truncated"):
        Ensemble.load(tmp_path / "v1")


def test_word_member_vader_features_help_on_unseen_words() -> None:
    member = WordSentimentMember(POLARITIES, min_count=1, seed_lexicon="vader")
    member.fit(DATA, DATA)
    assert member.predict_proba(["horrible"])[0].argmax() <= 1  # a VADER word never seen in training


def test_three_class_member() -> None:
    member = WordSentimentMember([-1, 0, 1], min_count=1, seed_lexicon="none")
    data = TrainData(["bad", "meh", "good"] * 10, np.array([0, 1, 2] * 10))
    member.fit(data, data)
    assert member.predict_proba(["good"]).shape == (1, 3)


def test_metrics() -> None:
    labels = np.array([0, 1, 1, 2])
    probabilities = np.eye(3)[[0, 1, 2, 2]]
    report = classification_report(probabilities, labels, ["a", "b", "c"], ["x", "x", "y", "y"])
    assert report["accuracy"] == 0.75
    assert report["per_class_f1"]["a"] == 1.0 and report["per_class_f1"]["b"] == pytest.approx(2 / 3)
    assert report["per_domain_accuracy"] == {"x": 1.0, "y": 0.5}
    assert per_class_f1(labels, labels, 3).tolist() == [1, 1, 1]
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.25)


def test_model_store_champion_and_history(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.next_path()[0] == 1 and store.champion() is None
    with pytest.raises(CheckpointError, match="run `sentiloop train` first"):
        store.champion_path()
    for version in (1, 2):
        store.path(version).mkdir(parents=True)
    store.set_champion(1, "bootstrap")
    store.set_champion(2, "promoted")
    assert store.champion() == 2 and store.previous_champion() == 1
    with pytest.raises(CheckpointError, match="does not exist"):
        store.set_champion(9, "x")
