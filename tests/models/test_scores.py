"""The champion score cache: exact round trip, one computation per (version, text), never a failure."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sentiloop.models.scores import ScoreStore, champion_proba


class CountingScorer:
    """Deterministic probabilities from the text; records every text it was asked to score."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        rows = np.array([[len(t) % 7 + 1.0, t.count("a") + 0.5, 1 / 3] for t in texts])
        return rows / rows.sum(axis=1, keepdims=True)


TEXTS = [f"text number {i} about a cat" for i in range(1200)]  # more than one IN (...) chunk


def test_scores_round_trip_exactly_per_version(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores.sqlite", 3)
    scorer = CountingScorer()
    expected = scorer.predict_proba(TEXTS)
    store.put(1, TEXTS, expected)
    found = store.get(1, TEXTS)
    assert sorted(found) == list(range(len(TEXTS)))
    assert all(np.array_equal(found[i], expected[i]) for i in found)  # float64 in, the same bits out
    assert store.get(2, TEXTS) == {}
    store.close()


def test_champion_proba_scores_each_text_once_per_version(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores.sqlite", 3)
    scorer = CountingScorer()
    first = champion_proba(store, 1, scorer, TEXTS[:100])
    again = champion_proba(store, 1, scorer, TEXTS[:150])  # 100 known, 50 new
    assert len(scorer.asked) == 150
    np.testing.assert_array_equal(again[:100], first)
    np.testing.assert_array_equal(again, scorer.predict_proba(TEXTS[:150]))
    champion_proba(store, 2, scorer, TEXTS[:10])  # another champion scores for itself
    assert len(scorer.asked) == 150 + 150 + 10


def test_retain_drops_other_versions(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores.sqlite", 3)
    probabilities = CountingScorer().predict_proba(TEXTS[:5])
    for version in (1, 2, 3):
        store.put(version, TEXTS[:5], probabilities)
    store.retain({2, 3})
    assert store.get(1, TEXTS[:5]) == {} and len(store.get(2, TEXTS[:5])) == len(store.get(3, TEXTS[:5])) == 5


def test_a_damaged_cache_file_means_scoring_not_failing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "scores.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    scorer = CountingScorer()
    result = champion_proba(ScoreStore(path, 3), 1, scorer, TEXTS[:20])
    np.testing.assert_array_equal(result, scorer.predict_proba(TEXTS[:20]))
    assert "score cache" in caplog.text


def test_a_full_disk_means_scoring_not_failing(small_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    (small_tmpfs / "filler").write_bytes(b"x" * (small_tmpfs_free(small_tmpfs) - 4096))
    texts = [f"{t} {'padding ' * 40}" for t in TEXTS]
    scorer = CountingScorer()
    result = champion_proba(ScoreStore(small_tmpfs / "scores.sqlite", 3), 1, scorer, texts)
    np.testing.assert_array_equal(result, scorer.predict_proba(texts))
    assert "not written" in caplog.text or "unreadable" in caplog.text


def small_tmpfs_free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_a_locked_cache_means_scoring_not_waiting_forever(tmp_path: Path) -> None:
    path = tmp_path / "scores.sqlite"
    store = ScoreStore(path, 3)
    store.put(1, TEXTS[:1], CountingScorer().predict_proba(TEXTS[:1]))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = ScoreStore(path, 3)
        other._connection().execute("PRAGMA busy_timeout=100")
        scorer = CountingScorer()
        result = champion_proba(other, 1, scorer, TEXTS[:20])
        np.testing.assert_array_equal(result, scorer.predict_proba(TEXTS[:20]))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        ScoreStore(tmp_path / "s.sqlite", 3).put(1, TEXTS[:2], np.zeros((2, 4)))
