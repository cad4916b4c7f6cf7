"""Fitting the ensemble's soft vote on held-out data: weights, a per-class bias, and who may vote.

The seed's fixed weights (BERT .30, BiLSTM .30, LSTM .25, word-sentiment .15) are a prior, not a
measurement: with the full profile on the VADER ground truth they serve 0.621 while BERT alone scores
0.647, because the weaker members outvote it where they agree with each other. :func:`fit_vote`
therefore chooses the vote on validation data among

* the seed weights,
* weights minimising the validation log-loss (started from the seed's), with a class bias if it helps,
* each member alone,

and takes the most accurate, so the served vote is never worse on validation than its best member.
A member no better than always answering the most frequent class gets weight 0 first, with the reason
(e.g. an encoder whose tokenizer cannot read the language).

The vote is fitted on one half of the validation split, the *vote fold* (:func:`in_vote_fold`, fixed
by each text's hash); the retrain gate's golden set is the other half. Fitted and judged on the same
rows, a champion looked better than it was and every challenger looked like it forgot: the demo
promoted nothing (champion golden 0.558, challenger 0.506).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sentiloop.evaluation import accuracy

# A member counts as "at chance" unless its validation accuracy beats the majority-class rate by this
# many standard errors (binomial, one-sided: z = 2 is a ~2 % false alarm for a truly useless member).
CHANCE_Z = 2.0
SEED = "seed weights"
FITTED = "fitted weights"


VOTE_FOLD = "vote fold"  # ``info["vote"]["fitted_on"]``: the vote saw only the vote fold of validation


def in_vote_fold(texts: Sequence[str]) -> np.ndarray:
    """Which validation texts the vote is fitted on: half of them, by the parity of each text's sha256,
    so the bootstrap and every later retrain of its lineage agree on the split without storing it."""
    return np.array([hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 for text in texts], dtype=bool)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0))))


def normalise_weights(weights: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Weights of ``names`` only, summing to 1 (equal weights if they are all zero)."""
    chosen = {name: float(weights.get(name, 0.0)) for name in names}
    total = sum(chosen.values())
    if total <= 0:
        return {name: 1.0 / len(names) for name in names}
    return {name: value / total for name, value in chosen.items()}


def combine(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted soft vote over the members present in ``probabilities`` (weights renormalised)."""
    names = list(probabilities)
    used = normalise_weights(weights, names)
    return np.einsum("m,mnc->nc", np.array([used[name] for name in names]), np.stack([probabilities[name] for name in names]))


def apply_class_bias(probabilities: np.ndarray, bias: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """Rescale each class's probability by exp(bias) and renormalise (identity without a bias)."""
    if bias is None:
        return probabilities
    scaled = probabilities * np.exp(np.asarray(bias, dtype=float))
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_class_bias(probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per-class log-prior offsets minimising validation log-loss (L2-shrunk towards none).

    Members trained on a few thousand examples often drift in how often they predict each class (one
    epoch more or less moves a whole class); the vote's probabilities are then mis-calibrated by class,
    which costs accuracy and can collapse a frequent class. Five numbers fitted on held-out data fix
    that without touching the members. The shrinkage (1/n) keeps a small validation set from
    over-fitting them.
    """
    from scipy.optimize import minimize

    n, classes = probabilities.shape

    def loss(bias: np.ndarray) -> float:
        return log_loss(apply_class_bias(probabilities, bias), labels) + float(bias @ bias) / n

    result = minimize(loss, np.zeros(classes), method="L-BFGS-B")
    bias = result.x - result.x.mean()  # only differences matter
    return [float(b) for b in bias]


def optimise_weights(member_probabilities: Mapping[str, np.ndarray], labels: np.ndarray,
                     start: Mapping[str, float] | None = None) -> dict[str, float]:
    """Weights minimising the validation log-loss of the soft vote (on the simplex, via softmax)."""
    from scipy.optimize import minimize

    names = list(member_probabilities)
    if len(names) == 1:
        return {names[0]: 1.0}
    stacked = np.stack([member_probabilities[n] for n in names])  # (members, n, classes)
    initial = normalise_weights(start or {}, names)
    theta0 = np.log(np.array([max(initial[n], 1e-6) for n in names]))

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        return log_loss(np.tensordot(w, stacked, axes=1), labels)

    result = minimize(loss, theta0, method="Nelder-Mead" if len(names) <= 2 else "Powell", options={"maxiter": 2000})
    w = np.exp(result.x - result.x.max())
    w /= w.sum()
    return {n: float(v) for n, v in zip(names, w)}


def chance_accuracy(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def at_chance(probabilities: np.ndarray, labels: np.ndarray) -> bool:
    """True if the member's accuracy does not beat the majority-class rate by ``CHANCE_Z`` standard errors."""
    base = chance_accuracy(labels)
    margin = CHANCE_Z * math.sqrt(max(base * (1 - base), 1e-12) / len(labels))
    return accuracy(probabilities, labels) <= base + margin


@dataclass(frozen=True)
class FittedVote:
    """The chosen vote and what it was chosen from (validation accuracies by candidate)."""

    weights: dict[str, float]
    class_bias: list[float] | None
    chosen: str  # SEED, FITTED or a member's name (that member alone)
    candidates: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # member → why it got weight 0

    def report(self) -> dict[str, object]:
        return {"chosen": self.chosen, "validation_accuracy": self.candidates, "excluded": self.excluded, "fitted_on": VOTE_FOLD}


def fit_vote(member_probabilities: Mapping[str, np.ndarray], labels: np.ndarray, seed_weights: Mapping[str, float],
             notes: Mapping[str, str] | None = None) -> FittedVote:
    """The most accurate vote on (``member_probabilities``, ``labels``) among the seed weights, fitted
    weights (+ class bias where it helps) and each member alone; ties go to that order.

    Members at chance (:func:`at_chance`) vote with weight 0; ``notes`` (member → text, e.g. its
    tokenizer's unknown-token rate) is added to their reason. If every member is at chance nobody is
    excluded: there is nothing better to serve.
    """
    names = list(member_probabilities)
    chance = chance_accuracy(labels)
    excluded = {
        name: (f"validation accuracy {accuracy(p, labels):.3f} is no better than always answering the most "
               f"frequent class ({chance:.3f})" + (f"; {notes[name]}" if notes and name in notes else ""))
        for name, p in member_probabilities.items() if at_chance(p, labels)
    }
    if len(excluded) == len(names):
        excluded = {}
    voting = {name: p for name, p in member_probabilities.items() if name not in excluded}

    seed = normalise_weights(seed_weights, list(voting))
    fitted = optimise_weights(voting, labels, start=seed)
    fitted_vote = combine(voting, fitted)
    bias: list[float] | None = fit_class_bias(fitted_vote, labels)
    if accuracy(apply_class_bias(fitted_vote, bias), labels) < accuracy(fitted_vote, labels):
        bias = None
    options: list[tuple[str, dict[str, float], list[float] | None]] = [(SEED, seed, None), (FITTED, fitted, bias)]
    options += [(name, {n: float(n == name) for n in voting}, None) for name in voting]
    candidates = {label: accuracy(apply_class_bias(combine(voting, weights), b), labels) for label, weights, b in options}
    label, weights, chosen_bias = max(options, key=lambda option: candidates[option[0]])  # max keeps the first of ties
    full_weights = {name: weights.get(name, 0.0) for name in names}
    return FittedVote(full_weights, chosen_bias, label, candidates, excluded)
