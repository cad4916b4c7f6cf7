"""The OOV drift signal measures unknown words with the champion's own tokenizer (Kiwi for Korean)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from sentiloop.models.base import TrainData
from sentiloop.models.tokenize import get_tokenizer
from sentiloop.models.word_member import WordSentimentMember
from sentiloop.monitoring.drift_monitor import champion_vocabulary

KOREAN = ["영화가 정말 재미있었다", "배우들의 연기가 훌륭했다", "지루하고 별로였다", "시간이 아까운 영화였다"]


@dataclass
class Champion:
    members: dict[str, object] = field(default_factory=dict)


def korean_word_member() -> WordSentimentMember:
    pytest.importorskip("kiwipiepy")
    member = WordSentimentMember([-1.0, 0.0, 1.0], min_count=1, tokenizer="kiwi", seed_lexicon="none")
    member.fit(TrainData(KOREAN, np.array([2, 2, 0, 0])))
    return member


def test_a_kiwi_champion_is_measured_with_kiwi() -> None:
    member = korean_word_member()
    known = champion_vocabulary(Champion({"word_sentiment": member}))
    assert known is not None
    tokenize, vocabulary = known
    probe = "연기가 훌륭한 영화였다"
    assert tokenize(probe) == get_tokenizer("kiwi")(probe) != get_tokenizer("regex")(probe)
    assert vocabulary == set(member.known_words())
    assert all(word in vocabulary for word in tokenize(KOREAN[0]))  # its own training text: nothing unknown


@dataclass
class VocabularyMember:
    """A stand-in with only the HasVocabulary capability (the real members train for seconds)."""

    tokenizer_name: str
    words: list[str]
    kind: str = "fake"

    def known_words(self) -> list[str]:
        return self.words

    def tokenize(self, text: str) -> list[str]:
        return get_tokenizer(self.tokenizer_name)(text)


def test_the_tokenizer_most_vocabulary_members_share_wins_and_only_their_words_count() -> None:
    champion = Champion({"word_sentiment": VocabularyMember("kiwi", ["영화"]), "lstm": VocabularyMember("regex", ["good"]),
                         "bilstm": VocabularyMember("regex", ["bad"]), "bert": object()})
    known = champion_vocabulary(champion)
    assert known is not None
    tokenize, vocabulary = known
    assert vocabulary == {"good", "bad"}
    assert tokenize("Good, BAD!") == ["good", "bad", "!"]


def test_a_tie_goes_to_the_first_member_in_training_order_and_no_vocabulary_means_no_signal() -> None:
    champion = Champion({"lstm": VocabularyMember("regex", ["good"]), "word_sentiment": VocabularyMember("kiwi", ["영화"])})
    known = champion_vocabulary(champion)
    assert known is not None and known[1] == {"영화"}  # word_sentiment trains first
    assert champion_vocabulary(Champion({"bert": object()})) is None


def test_the_page_hinkley_statistic_read_from_river_crosses_the_threshold_when_it_fires() -> None:
    """``page_hinkley_statistic`` reads River's private sums: this pins what the supported river range does."""
    from river import drift

    from sentiloop.monitoring.drift import page_hinkley_statistic

    detector = drift.PageHinkley(min_instances=30, delta=0.05, threshold=10.0, mode="up")
    rng = np.random.default_rng(0)
    stream = [*(rng.random(300) < 0.1), *(rng.random(300) < 0.9)]
    statistics = []
    for error in stream:
        detector.update(int(error))
        statistics.append(page_hinkley_statistic(detector))
        if detector.drift_detected:
            break
    assert 300 < len(statistics) < 400, "fires soon after the error rate rises"
    assert statistics[-1] > 10.0 >= max(statistics[30:-1])


def test_the_champions_scores_are_kept_for_the_retrain_worker(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from sentiloop.config import DriftConfig
    from sentiloop.events import FeedbackEvent
    from sentiloop.models.ensemble import Ensemble
    from sentiloop.models.scores import ScoreStore
    from sentiloop.monitoring.drift_monitor import DriftMonitor
    from sentiloop.monitoring.metrics import IngestMetrics

    member = WordSentimentMember([-1.0, 0.0, 1.0], min_count=1, seed_lexicon="none")
    member.fit(TrainData(["good film", "bad film", "fine film"], np.array([2, 0, 1])))
    champion = Ensemble({"word_sentiment": member}, {"word_sentiment": 1.0}, ["negative", "neutral", "positive"])
    scores = ScoreStore(tmp_path / "scores.sqlite", 3)
    monitor = DriftMonitor(DriftConfig(), 3, IngestMetrics(CollectorRegistry()), scores=scores)
    monitor.swap(champion, 4)
    texts = ["good good film", "bad film indeed", "a fine film"]
    monitor.process([(FeedbackEvent(f"e{i}", t, 1, None, None, "d", "en", 0), False) for i, t in enumerate(texts)])
    kept = scores.get(4, texts)
    assert sorted(kept) == [0, 1, 2]
    np.testing.assert_array_equal(np.stack([kept[i] for i in range(3)]), champion.predict_proba(texts))
