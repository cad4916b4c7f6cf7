"""Unit tests of the continual-learning decisions: drift signals, policy, convergence, refinement,
weights, bias checks and the promotion gate."""

import numpy as np
import pytest

from sentiloop.config import GateSettings, PolicyConfig, RetrainConfig
from sentiloop.models.vote import apply_class_bias, fit_class_bias, optimise_weights
from sentiloop.monitoring.bias import detect_data_bias
from sentiloop.monitoring.drift import ErrorRateDrift, LabelShiftDrift, OOVRateDrift, Signal, calibrate, jensen_shannon
from sentiloop.retrainers.convergence import ConvergenceDetector, prediction_variance
from sentiloop.retrainers.gate import promotion_gate
from sentiloop.retrainers.policy import Decision, DecisionPolicy, RetrainState, TransitionError
from sentiloop.retrainers.refinement import refine_dataset
from sentiloop.retrainers.weights import balance_check, class_bias_for, weights_for


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def policy_on(clock: FakeClock, warmup_events: int = 0, cooldown_s: float = 60, hysteresis: int = 1, max_retrains: int = 2,
              window_s: float = 1000, settle_events: int = 0) -> DecisionPolicy:
    config = PolicyConfig(warmup_events=warmup_events, cooldown_s=cooldown_s, hysteresis=hysteresis, max_retrains=max_retrains,
                          window_s=window_s, drift_settle_events=settle_events)
    return DecisionPolicy(config, volume_threshold=500, clock=clock)


def run_once(policy: DecisionPolicy, outcome: str = "rejected") -> Decision:
    """due → running → idle: the retrain the policy said was due."""
    started = policy.started()
    assert policy.state is RetrainState.RUNNING
    policy.finished(outcome)
    assert policy.state is RetrainState.IDLE
    return started


def test_policy_warmup_hysteresis_cooldown_and_rate_limit() -> None:
    clock = FakeClock()
    policy = policy_on(clock, warmup_events=100, hysteresis=2)
    policy.observe_volume(0, scored=99)
    policy.observe_drift([fired()], head_seq=0)
    assert not policy.tick().retrain
    assert "warm-up: 99/100" in policy.tick().suppressed  # a persistent drift, held back by the warm-up
    policy.observe_volume(0, scored=100)
    policy.observe_drift([], head_seq=0)
    assert not policy.tick().retrain  # streak broken
    policy.observe_drift([fired()], head_seq=0)
    assert not policy.tick().retrain  # first sighting: hysteresis wants 2
    decision = policy.tick()
    assert decision.retrain and decision.trigger == "drift" and decision.consumed == ("error_rate",)
    assert policy.state is RetrainState.DUE and policy.due == decision
    assert policy.tick().retrain  # due stays due until it is started
    run_once(policy)
    clock.now = 10
    policy.observe_volume(500, scored=100)
    blocked = policy.tick()
    assert not blocked.retrain and "cool-down" in blocked.suppressed and not blocked.consumed
    assert blocked.trigger == "volume"  # the drift streak starts again after a retrain: hysteresis wants 2 sightings
    clock.now = 70
    policy.observe_drift([], head_seq=0)
    volume = policy.tick()
    assert volume.retrain and volume.trigger == "volume" and volume.reason == "500 new labelled events >= 500"
    run_once(policy)
    clock.now = 200
    limited = policy.tick()
    assert not limited.retrain and "rate limit: 2 retrains" in limited.suppressed and "rate limit" in policy.blocked()
    clock.now = 1001
    assert policy.tick().retrain  # the window slid


def test_policy_idle_settling_due_running_idle() -> None:
    clock = FakeClock()
    policy = policy_on(clock, settle_events=100)
    assert policy.state is RetrainState.IDLE and policy.settling is None and policy.due is None
    policy.observe_drift([fired()], head_seq=500)
    entered = policy.tick()
    assert not entered.retrain and entered.consumed == ("error_rate",)  # acted on: the caller resets the detector
    assert policy.state is RetrainState.SETTLING and policy.settling is not None and policy.settling.since_seq == 500
    policy.observe_volume(0, 0, after_drift=60)
    policy.observe_drift([fired("label_shift")], head_seq=560)  # a second detection joins the settling retrain
    assert policy.tick().consumed == ("label_shift",) and policy.settling.since_seq == 500
    policy.observe_drift([], head_seq=600)
    policy.observe_volume(0, 0, after_drift=100)
    due = policy.tick()
    assert due.retrain and due.trigger == "drift" and due.recent_since == 500
    assert due.reason == "error up (then 100 labelled events collected)" and policy.state is RetrainState.DUE
    assert policy.started() == due and policy.state is RetrainState.RUNNING and policy.settling is None
    policy.observe_drift([fired()], head_seq=700)
    assert not policy.tick().retrain  # nothing is weighed while a retrain runs
    assert policy.request("operator").running
    policy.finished("promoted")
    assert policy.state is RetrainState.IDLE and policy.last_outcome == "promoted"


def test_policy_settling_ends_early_for_a_volume_retrain_which_keeps_the_detection_seq() -> None:
    clock = FakeClock()
    policy = policy_on(clock, settle_events=100)
    policy.observe_drift([fired()], head_seq=500)
    policy.tick()
    policy.observe_drift([], head_seq=510)
    policy.observe_volume(500, 0, after_drift=10)
    decision = policy.tick()
    assert decision.retrain and decision.trigger == "volume" and decision.recent_since == 500 and policy.settling is None


def test_policy_transitions_out_of_order_are_refused() -> None:
    policy = policy_on(FakeClock())
    with pytest.raises(TransitionError, match="nothing is due"):
        policy.started()
    with pytest.raises(TransitionError, match="no retrain runs"):
        policy.finished("failed")


def test_policy_manual_requests() -> None:
    clock = FakeClock()
    policy = policy_on(clock, settle_events=100)
    policy.observe_drift([fired()], head_seq=42)
    policy.tick()  # settling
    answer = policy.request("operator", mode="full")
    assert answer.accepted and not answer.blocked and policy.state is RetrainState.DUE
    due = policy.tick()
    assert (due.trigger, due.reason, due.mode, due.recent_since) == ("manual", "operator", "full", 42)
    run_once(policy)
    refused = policy.request("again")  # the cool-down, as for automatic triggers
    assert not refused.accepted and not refused.running and "cool-down" in refused.blocked and policy.state is RetrainState.IDLE
    forced = policy.request("again", force=True)
    assert forced.accepted and "cool-down" in forced.blocked
    assert policy.tick().reason.startswith("again (forced past: cool-down")
    run_once(policy)
    clock.now = 1000
    assert policy.request("paused", held="retraining is paused").blocked == "retraining is paused"
    assert policy.state is RetrainState.IDLE


def test_policy_suppressed_drift_stays_latched_a_suppressed_schedule_does_not() -> None:
    clock = FakeClock()
    policy = policy_on(clock, cooldown_s=600)
    policy.request("first")
    run_once(policy)
    policy.observe_drift([fired()], head_seq=0)
    policy.observe_schedule("schedule 0 3 * * *")
    suppressed = policy.tick()
    assert not suppressed.retrain and "cool-down" in suppressed.suppressed and not suppressed.consumed  # the detector keeps it
    clock.now = 600
    policy.observe_drift([], head_seq=0)
    assert not policy.tick().retrain  # the schedule tick was weighed once, and refused
    policy.observe_drift([fired()], head_seq=0)
    assert policy.tick().trigger == "drift"


def test_policy_retune_keeps_the_history() -> None:
    clock = FakeClock()
    policy = DecisionPolicy.from_config(RetrainConfig.model_validate({"policy": {"cooldown_s": 60, "warmup_events": 0}}), clock)
    assert policy.config.drift_settle_events == 1000 and policy.volume_threshold == 2000
    policy.request("operator")
    run_once(policy)
    clock.now = 100
    assert policy.blocked() == ""
    policy.retune(RetrainConfig.model_validate({"volume_threshold": 7, "policy": {"cooldown_s": 3600, "drift_settle_events": 0}}))
    assert "cool-down: 100s" in policy.blocked() and policy.volume_threshold == 7 and policy.config.drift_settle_events == 0


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
    small = promotion_gate(right(golden), right(golden), golden, half(recent[:10]), right(recent[:10]), recent[:10], GateSettings(min_holdout=50))
    assert not small.promote and "needs 50" in small.reasons[0]


def test_gate_class_rule_ignores_sampling_noise_but_not_a_real_loss() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [60, 400, 400])
    relaxed = GateSettings(min_delta=0, golden_tolerance=1)
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


def test_a_class_bias_that_costs_the_old_data_accuracy_is_not_kept() -> None:
    rng = np.random.default_rng(4)
    old_labels, new_labels = rng.integers(0, 3, 1000), np.full(1000, 2)  # new data: nearly all class 2
    labels = np.concatenate([old_labels, new_labels])
    logits = np.eye(3)[labels] * 1.2 + rng.normal(0, 1, (2000, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    old = np.arange(2000) < 1000
    assert fit_class_bias(probabilities, labels)[2] > 0.3  # the pooled fit follows the new data's mix ...
    assert class_bias_for(probabilities, labels, old) is None  # ... which would cost the old rows: not kept
    balanced = np.concatenate([old_labels, rng.integers(0, 3, 1000)])
    skewed = np.eye(3)[balanced] * 1.2 + rng.normal(0, 1, (2000, 3))
    skewed[:, 1] += 1.2  # a vote that over-predicts class 1 everywhere: correcting it helps the old rows too
    probabilities = np.exp(skewed) / np.exp(skewed).sum(axis=1, keepdims=True)
    assert class_bias_for(probabilities, balanced, old) is not None


def test_re_fitted_weights_that_cost_the_old_data_accuracy_are_not_kept() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 2000)
    old = np.arange(2000) < 600  # the replayed rows; the rest is new-domain data

    def member(right_on_old: float, right_on_new: float) -> np.ndarray:
        right = np.where(old, rng.random(2000) < right_on_old, rng.random(2000) < right_on_new)
        guess = np.where(right, labels, (labels + rng.integers(1, 3, 2000)) % 3)
        return np.eye(3)[guess] * 0.6 + 0.4 / 3

    probabilities = {"steady": member(0.8, 0.4), "adapting": member(0.45, 0.9)}
    champion = {"steady": 0.8, "adapting": 0.2}
    assert optimise_weights(probabilities, labels, start=champion)["adapting"] > 0.5  # the pooled fit follows the new data ...
    assert weights_for(probabilities, labels, old, champion) == pytest.approx(champion)  # ... the old rows keep the champion's
    assert weights_for(probabilities, labels, np.zeros(2000, dtype=bool), champion)["adapting"] > 0.5  # no old rows: the fit


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
    floored = promotion_gate(champion, challenger, labels, champion, scoring(0.9), labels, golden_reference=0.81)
    assert not floored.promote and "lineage's best" in floored.reasons[0]  # ... but 2 points below an earlier champion
    assert floored.metrics.golden_reference == 0.81
