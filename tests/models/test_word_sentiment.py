import json

import numpy as np
import pytest

from sentiloop.errors import CheckpointError
from sentiloop.models.lexicon import load_seed_lexicon
from sentiloop.models.snapshots import DictionarySnapshots
from sentiloop.models.word_sentiment import WordSentimentModel

POLARITIES = [-2, -1, 0, 1, 2]


def test_new_word_enters_after_min_count_with_mean_target() -> None:
    model = WordSentimentModel(POLARITIES, alpha=0.3, min_count=2)
    model.learn_one("great", 4)  # target +2
    assert "great" not in model.words and model.pending["great"].count == 1
    model.learn_one("great", 3)  # target +1
    assert model.words["great"].score == pytest.approx(1.5)
    assert model.words["great"].updates == 2
    assert "great" not in model.pending


def test_known_word_moves_by_the_seed_rule() -> None:
    model = WordSentimentModel(POLARITIES, alpha=0.3, min_count=1)
    model.learn_one("fine", 3)
    model.learn_one("fine", 0)
    assert model.words["fine"].score == pytest.approx(0.7 * 1 + 0.3 * -2)
    assert model.words["fine"].updates == 2


def test_a_word_counts_once_per_event() -> None:
    model = WordSentimentModel(POLARITIES, min_count=1)
    model.learn_one("bad bad bad", 0)
    assert model.words["bad"].updates == 1


def test_predict_proba_shape_and_direction() -> None:
    model = WordSentimentModel(POLARITIES, min_count=1).fit(["awful"] * 3 + ["superb"] * 3, [0] * 3 + [4] * 3)
    probs = model.predict_proba(["awful", "superb", "unseen words"])
    assert probs.shape == (3, 5)
    assert np.allclose(probs.sum(axis=1), 1)
    assert probs[0].argmax() == 0 and probs[1].argmax() == 4
    assert np.allclose(probs[2], 0.2)  # no known word: uniform


def test_three_class_label_set() -> None:
    model = WordSentimentModel([-1, 0, 1], min_count=1).fit(["meh", "yay"], [1, 2])
    assert model.predict_proba(["yay"]).shape == (1, 3)


def test_vader_seed_lexicon_is_scaled() -> None:
    lexicon = load_seed_lexicon("vader", POLARITIES)
    assert len(lexicon) > 7000
    assert 0 < lexicon["good"] <= 2 and lexicon["horrible"] < -1
    assert max(abs(v) for v in lexicon.values()) <= 2


def test_snapshots_are_versioned_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = WordSentimentModel(POLARITIES, min_count=1).fit(["good film", "bad film"], [4, 0])
    snaps = DictionarySnapshots(tmp_path, keep=2)
    assert snaps.write(model)[0] == 1
    assert snaps.write(model)[0] == 2
    assert snaps.write(model)[0] == 3
    assert snaps.versions() == [2, 3]  # pruned to keep=2
    version, loaded = snaps.load()
    assert version == 3
    assert loaded.to_dict() == model.to_dict()
    path = snaps.path_for(3)
    document = json.loads(path.read_text())
    document["model"]["words"]["good"]["score"] = 1.9
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="sha256"):
        snaps.load(path)
    path.write_text("{")
    with pytest.raises(CheckpointError, match="is unreadable"):
        snaps.load(path)
