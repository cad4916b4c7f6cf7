"""Unit tests of the continual-learning decisions: drift signals, policy, convergence, refinement,
weights, bias checks and the promotion gate."""

import numpy as np
import pytest

from sentiloop.monitoring.bias import detect_data_bias
from sentiloop.monitoring.drift import ErrorRateDrift, LabelShiftDrift, OOVRateDrift, Signal, calibrate, jensen_shannon
from sentiloop.retrainers.convergence import ConvergenceDetector, prediction_variance
from sentiloop.retrainers.gate import GateConfig, promotion_gate
from sentiloop.retrainers.policy import DecisionPolicy
from sentiloop.retrainers.refinement import refine_dataset
from sentiloop.models.ensemble import apply_class_bias
from sentiloop.retrainers.weights import balance_check, fit_class_bias, optimise_weights


def error_stream(rate_before: float, rate_after: float, n: int, change_at: int, seed: int = 0) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [bool(rng.random() < (rate_before if i < change_at else rate_after)) for i in range(n)]


def test_error_drift_fires_on_a_rise_and_not_on_a_stable_stream() -> None:
    stable = error_stream(0.45, 0.45, 6000, 0, seed=1)
    calibration = calibrate(stable, [0] * 10, 5)
    detector = ErrorRateDrift(ph_threshold=calibration.ph_threshold)
    assert not any(detector.update(e).fired for e in error_stream(0.45, 0.45, 6000, 0, seed=2))
    detector.reset()
    fired_at = [i for i, e in enumerate(error_stream(0.45, 0.75, 4000, 2000, seed=3)) if detector.update(e).fired]
    assert fired_at and 2000 <= fired_at[0] <= 3000


def test_error_drift_ignores_an_improvement() -> None:
    detector = ErrorRateDrift(ph_threshold=20)
    assert not any(detector.update(e).fired for e in error_stream(0.6, 0.2, 4000, 2000))


def test_label_shift_and_oov() -> None:
    assert jensen_shannon(np.array([1.0, 0]), np.array([1.0, 0])) == 0
    assert jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1)
    shift = LabelShiftDrift(3, reference=np.array([1.0, 1, 1]), window=300, threshold=0.2)
    assert not any(shift.update(i % 3).fired for i in range(600))
    assert any(shift.update(0).fired for _ in range(300))
    oov = OOVRateDrift(str.split, {"a", "b"}, baseline=0.0, window=10, margin=0.2)
    assert not any(oov.update("a b").fired for _ in range(10))
    assert any(oov.update("x y").fired for _ in range(10))
    learnt = OOVRateDrift(str.split, {"a"}, baseline=None, window=10, margin=0.2)
    assert not any(learnt.update("a z").fired for _ in range(20))  # the first window is the baseline (0.5)
    assert any(learnt.update("y z").fired for _ in range(10))


def fired(name: str = "error_rate") -> Signal:
    return Signal(name, True, 0.7, 0.5, "error up")


def test_policy_warmup_hysteresis_cooldown_and_rate_limit() -> None:
    policy = DecisionPolicy(warmup_events=100, cooldown_s=60, hysteresis=2, max_retrains=2, window_s=1000)
    assert "warm-up" in policy.decide([fired()], now=0).suppressed or not policy.decide([fired()], now=0).retrain
    policy.observe(100)
    policy._streak.clear()
    assert not policy.decide([fired()], now=1).retrain  # first sighting: hysteresis wants 2
    assert not policy.decide([], now=2).retrain  # streak broken
    assert not policy.decide([fired()], now=3).retrain
    decision = policy.decide([fired()], now=4)
    assert decision.retrain and decision.trigger == "drift"
    policy.record_retrain(now=4)
    blocked = policy.decide([fired()], volume_reason="500 new", now=10)
    assert not blocked.retrain and "cool-down" in blocked.suppressed
    assert policy.decide([], volume_reason="500 new", now=70).retrain
    policy.record_retrain(now=70)
    limited = policy.decide([], volume_reason="500 new", now=200)
    assert not limited.retrain and "rate limit" in limited.suppressed
    assert policy.decide([], manual_reason="operator", now=200).retrain  # manual always goes through
    assert policy.decide([], volume_reason="500 new", now=1100).retrain  # the window slid


def test_convergence_rules() -> None:
    detector = ConvergenceDetector()
    assert detector.check(0.50, 0.2, 0.5) is None
    assert detector.check(0.502, 0.2, 0.5) is None
    assert detector.check(0.503, 0.2, 0.5) is None
    assert "no improvement" in detector.check(0.504, 0.2, 0.5)
    assert "refinement rate" in ConvergenceDetector().check(0.5, 0.005, 0.5)
    assert "prediction variance" in ConvergenceDetector().check(0.5, 0.2, 0.01)
    same = {"a": np.eye(3), "b": np.eye(3)}
    assert prediction_variance(same) == 0.0
    assert prediction_variance({"a": np.eye(3), "b": np.eye(3)[[1, 1, 2]]}) == pytest.approx(1 / 3)


def test_refinement_actions() -> None:
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8]])
    flagged = refine_dataset(["a", "b", "c", "d"], labels, probs, confidence_threshold=0.8, action="flag")
    assert flagged.flagged.tolist() == [False, True, False, True]
    assert flagged.refinement_rate == 0.5
    assert refine_dataset(["a", "b", "c", "d"], labels, probs, action="relabel").labels.tolist() == [0, 0, 2, 2]
    assert refine_dataset(["a", "b", "c", "d"], labels, probs, action="downweight", downweight=0.2).weights.tolist() == [1, 0.2, 1, 0.2]
    dropped = refine_dataset(["a", "b", "c", "d"], labels, probs, action="drop")
    assert dropped.texts == ["a", "c"] and dropped.stats()["kept"] == 2
    assert 0 < flagged.data_quality_score < 1


def test_weights_favour_the_better_member_and_balance_check() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    good = np.eye(3)[labels] * 0.8 + 0.2 / 3
    noise = rng.dirichlet(np.ones(3), 500)
    weights = optimise_weights({"good": good, "noise": noise}, labels)
    assert weights["good"] > 0.9 and sum(weights.values()) == pytest.approx(1)
    report = balance_check({"good": good, "noise": noise}, weights, labels)
    assert report.flagged and "imbalance" in report.reason


def test_bias_checks() -> None:
    labels = np.array([0] * 95 + [1] * 5)
    checks = {c.name: c for c in detect_data_bias(labels, 5, ["a"] * 100, ["a", "b", "c"], np.array([True] * 10 + [False] * 90),
                                                   {"x": np.eye(5)[labels], "y": np.eye(5)[labels]})}
    assert checks["label_distribution"].flagged
    assert checks["domain_coverage"].flagged
    assert checks["model_agreement"].bias_score == 1.0
    assert checks["refinement_patterns"].bias_score == pytest.approx(0.05)
    balanced = {c.name: c for c in detect_data_bias(np.arange(100) % 5, 5, ["a", "b"] * 50, ["a", "b"])}
    assert not balanced["label_distribution"].flagged and not balanced["domain_coverage"].flagged


def test_gate_refuses_worse_and_accepts_better() -> None:
    rng = np.random.default_rng(1)
    golden = rng.integers(0, 3, 400)
    recent = rng.integers(0, 3, 200)
    right = lambda y: np.eye(3)[y]  # noqa: E731
    wrong = lambda y: np.eye(3)[(y + 1) % 3]  # noqa: E731
    half = lambda y: np.where((np.arange(len(y)) % 2 == 0)[:, None], right(y), wrong(y))  # noqa: E731
    better = promotion_gate(right(golden), right(golden), golden, half(recent), right(recent), recent)
    assert better.promote and not better.reasons
    shuffled = promotion_gate(right(golden), wrong(golden), golden, half(recent), wrong(recent), recent)
    assert not shuffled.promote
    assert any("min_delta" in r for r in shuffled.reasons) and any("forgetting" in r for r in shuffled.reasons)
    small = promotion_gate(right(golden), right(golden), golden, half(recent[:10]), right(recent[:10]), recent[:10], GateConfig(min_holdout=50))
    assert not small.promote and "needs 50" in small.reasons[0]


def test_gate_class_rule_ignores_sampling_noise_but_not_a_real_loss() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [60, 400, 400])
    relaxed = GateConfig(min_delta=0, golden_tolerance=1)
    champion = labels.copy()
    champion[rng.choice(np.flatnonzero(labels == 0), 15, replace=False)] = 1  # class 0: recall .75, F1 .86

    def gate(challenger: np.ndarray) -> list[str]:
        one_hot = np.eye(3)
        return promotion_gate(one_hot[champion], one_hot[challenger], labels, one_hot[champion], one_hot[champion], labels,
                              relaxed).reasons

    collapsed = champion.copy()
    collapsed[labels == 0] = 1  # class 0 is never predicted again
    assert any(r.startswith("class 0 F1") for r in gate(collapsed))
    churn = champion.copy()
    wrong = np.flatnonzero((labels == 0) & (champion == 0))[:6]
    fixed = np.flatnonzero((labels == 0) & (champion != 0))[:3]
    churn[wrong], churn[fixed] = 1, 0  # loses 6, wins 3 of 60: a few points, within the noise of 60 examples
    assert not any(r.startswith("class 0") for r in gate(churn))


def test_gate_class_rule_does_not_lock_in_a_champions_bias() -> None:
    labels = np.repeat(np.arange(3), 300)
    biased = np.where(np.arange(900) % 3 == 0, labels, 1)  # predicts class 1 for two thirds of everything
    better = np.where(np.arange(900) % 3 == 2, (labels + 1) % 3, labels)  # right on two thirds, no favourite
    one_hot = np.eye(3)
    result = promotion_gate(one_hot[biased], one_hot[better], labels, one_hot[biased], one_hot[better], labels)
    assert result.promote, result.reasons  # class 1 recall falls 1.0 -> 0.67, but its F1 rises


def test_class_bias_recalibrates_a_drifted_class_mix() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 2000)
    logits = np.eye(3)[labels] * 1.5 + rng.normal(0, 1, (2000, 3))
    logits[:, 1] += 1.2  # a retrained vote that over-predicts class 1
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bias = fit_class_bias(probabilities, labels)
    corrected = apply_class_bias(probabilities, bias)
    assert bias[1] < min(bias[0], bias[2])
    assert np.mean(corrected.argmax(axis=1) == labels) > np.mean(probabilities.argmax(axis=1) == labels) + 0.05
    assert np.allclose(corrected.sum(axis=1), 1) and apply_class_bias(probabilities, None) is probabilities


def test_calibration_measures_label_distance_to_the_daemons_reference() -> None:
    labels = np.arange(3000) % 3
    errors = [False] * 3000
    own = calibrate(errors, labels, 3)
    skewed = calibrate(errors, labels, 3, reference_labels=[0] * 50 + [1] * 25 + [2] * 25)
    assert skewed.label_stable_max > own.label_stable_max + 0.05  # the reference's own mix is part of what a window sees


def test_gate_golden_floor_is_the_lineages_best_so_forgetting_cannot_accumulate() -> None:
    labels = np.arange(1000) % 2
    one_hot = np.eye(2)

    def scoring(accuracy: float) -> np.ndarray:
        predicted = labels.copy()
        predicted[: int(round((1 - accuracy) * 1000))] ^= 1
        return one_hot[predicted]

    champion, challenger = scoring(0.795), scoring(0.79)  # -0.5 point against the champion: allowed ...
    assert promotion_gate(champion, challenger, labels, champion, scoring(0.9), labels).promote
    floored = promotion_gate(champion, challenger, labels, champion, scoring(0.9), labels, GateConfig(golden_reference=0.81))
    assert not floored.promote and "lineage's best" in floored.reasons[0]  # ... but 2 points below an earlier champion
    assert floored.metrics["golden_reference"] == 0.81
