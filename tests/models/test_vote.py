"""Choosing the served vote on validation: never worse there than the best member, chance members out."""

from __future__ import annotations

import numpy as np
import pytest

from sentiloop.evaluation import accuracy
from sentiloop.models.vote import FITTED, SEED, apply_class_bias, at_chance, combine, fit_vote, in_vote_fold
from sentiloop.retrainers.data import Pool, golden_pool

CLASSES = 5


def answers(labels: np.ndarray, right: float, rng: np.random.Generator, wrong_as: np.ndarray | None = None) -> np.ndarray:
    """Confident probabilities that are right on a ``right`` share of rows, else ``wrong_as`` (or random)."""
    hit = rng.random(len(labels)) < right
    wrong = wrong_as if wrong_as is not None else rng.integers(0, CLASSES, len(labels))
    predicted = np.where(hit, labels, wrong)
    probabilities = np.full((len(labels), CLASSES), 0.1 / (CLASSES - 1))
    probabilities[np.arange(len(labels)), predicted] = 0.9
    return probabilities


def test_seed_weights_that_let_weak_members_outvote_the_strong_one_are_not_served() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, 3000)
    shared_mistake = (labels + 1) % CLASSES  # the two weak members agree with each other when wrong
    probabilities = {"bert": answers(labels, 0.65, rng), "lstm": answers(labels, 0.35, rng, shared_mistake),
                     "bilstm": answers(labels, 0.35, rng, shared_mistake)}
    seed = {"bert": 0.3, "lstm": 0.35, "bilstm": 0.35}
    best_member = max(accuracy(p, labels) for p in probabilities.values())
    assert accuracy(combine(probabilities, seed), labels) < best_member  # the problem, as measured on VADER
    vote = fit_vote(probabilities, labels, seed)
    served = accuracy(apply_class_bias(combine(probabilities, vote.weights), vote.class_bias), labels)
    assert served >= best_member
    assert served == pytest.approx(vote.candidates[vote.chosen])
    assert vote.candidates[SEED] < best_member and set(vote.candidates) == {SEED, FITTED, "bert", "lstm", "bilstm"}
    assert sum(vote.weights.values()) == pytest.approx(1.0)


def test_a_member_at_chance_gets_weight_zero_with_the_reason() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, CLASSES, 2000)
    blind = np.tile(np.full(CLASSES, 1 / CLASSES) + np.eye(CLASSES)[0] * 1e-3, (len(labels), 1))  # always class 0
    blind /= blind.sum(axis=1, keepdims=True)
    probabilities = {"bert": blind, "lstm": answers(labels, 0.5, rng), "word_sentiment": answers(labels, 0.4, rng)}
    assert at_chance(blind, labels) and not at_chance(probabilities["lstm"], labels)
    vote = fit_vote(probabilities, labels, {"bert": 0.5, "lstm": 0.25, "word_sentiment": 0.25},
                    notes={"bert": "its tokenizer maps 93% of the training text's word pieces to its unknown token"})
    assert vote.weights["bert"] == 0.0
    assert "no better than always answering the most frequent class" in vote.excluded["bert"]
    assert "93%" in vote.excluded["bert"] and set(vote.excluded) == {"bert"}
    assert "bert" not in vote.candidates


def test_when_every_member_is_at_chance_nobody_is_excluded() -> None:
    labels = np.random.default_rng(2).integers(0, CLASSES, 500)
    uniform = np.full((len(labels), CLASSES), 1 / CLASSES)
    vote = fit_vote({"a": uniform, "b": uniform.copy()}, labels, {"a": 0.5, "b": 0.5})
    assert vote.excluded == {} and sum(vote.weights.values()) == pytest.approx(1.0)


def test_a_class_bias_is_served_only_where_it_helps() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, CLASSES, 3000)
    probabilities = answers(labels, 0.5, rng)
    under = probabilities.copy()
    under[:, 2] *= 0.01  # a member that never says class 2: a bias fixes its class mix
    under /= under.sum(axis=1, keepdims=True)
    vote = fit_vote({"a": under, "b": under.copy()}, labels, {"a": 0.5, "b": 0.5})
    assert vote.chosen == FITTED and vote.class_bias is not None and vote.class_bias[2] > 0
    calibrated = fit_vote({"a": probabilities, "b": probabilities.copy()}, labels, {"a": 0.5, "b": 0.5})
    assert calibrated.chosen == SEED and calibrated.class_bias is None  # nothing to gain: the seed weights, as they are


def test_the_vote_fold_is_half_of_validation_fixed_by_the_text_and_the_golden_set_is_the_rest() -> None:
    texts = [f"review number {i}" for i in range(2000)]
    fold = in_vote_fold(texts)
    assert 0.45 < fold.mean() < 0.55
    assert (in_vote_fold(list(reversed(texts))) == fold[::-1]).all()  # the text decides, not its position
    validation = Pool([str(i) for i in range(len(texts))], texts, np.zeros(len(texts), dtype=np.int64), ["movies"] * len(texts))
    golden = golden_pool(validation, {"vote": fit_vote({"a": np.eye(CLASSES)[[0, 1]]}, np.array([0, 1]), {"a": 1.0}).report()})
    assert len(golden) == int((~fold).sum()) and not set(golden.texts) & {t for t, f in zip(texts, fold) if f}
    assert len(golden_pool(validation, {})) == len(texts)  # a lineage with the seed's fixed vote: the whole split
