"""The iterative refine → retrain → evaluate cycle (seed ``IterativeRetrainingSystem``).

Per iteration (up to ``max_iterations``):
  1. refine: a reference ensemble scores examples it did NOT train on — the champion for iteration 1
     (it never saw the new feedback), then the previous challenger on the fold held out of its
     training — and confident disagreements are flagged/relabelled/down-weighted/dropped;
  2. retrain the members in the seed's order word-sentiment → LSTM → BiLSTM → BERT, each with its
     strategy (or ``full``), on refined new data + replay, each minus this iteration's held-out fold;
  3. optimise ensemble weights and the class bias on the two held-out folds; balance check; bias checks;
  4. evaluate, checkpoint (atomic, sha256), log to MLflow; stop when the convergence rules say so.
The last iteration's ensemble is the challenger; the promotion gate then compares it to the champion.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sentiloop.config import Settings
from sentiloop.errors import CheckpointError
from sentiloop.evaluation import accuracy
from sentiloop.models.base import HasOptimizerState, TrainData, WarmStart
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.registry import in_training_order
from sentiloop.models.vote import combine
from sentiloop.monitoring.bias import detect_data_bias
from sentiloop.retrainers.checkpoints import CheckpointManager, ResumePoint
from sentiloop.retrainers.convergence import ConvergenceDetector, prediction_variance
from sentiloop.retrainers.data import CyclePools, Pool, fold_of
from sentiloop.retrainers.gate import GateResult, promotion_gate
from sentiloop.retrainers.progress import ProgressFile
from sentiloop.retrainers.refinement import apply_action, refine_dataset
from sentiloop.retrainers.results import ENSEMBLE, GOLDEN, RECENT, VALIDATION, Accuracy, Balance, BiasFinding, IterationResult, RefinementStats, Split
from sentiloop.retrainers.strategies import Mode, retrain_member
from sentiloop.retrainers.weights import balance_check, class_bias_for, weights_for

if TYPE_CHECKING:
    from sentiloop.monitoring.tracking import Tracker

log = logging.getLogger(__name__)

MIN_VALIDATION = 20
GOLDEN_BEST = "golden_best"  # info key: best golden-set accuracy along a champion's lineage


@dataclass
class CycleResult:
    challenger: Ensemble
    iterations: list[IterationResult] = field(default_factory=list)
    stop_reason: str = ""
    gate: GateResult | None = None


Listener = Callable[[IterationResult], None]


class RetrainCycle:
    """One retrain run over fixed pools; ``run()`` returns the challenger and the gate's verdict."""

    def __init__(self, settings: Settings, champion: Ensemble, pools: CyclePools, checkpoints: CheckpointManager,
                 mode: Mode = "strategic", tracker: Tracker | None = None, on_iteration: Listener | None = None,
                 progress: ProgressFile | None = None, champion_scores: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        """``champion_scores``: the champion's probabilities for texts, where they may already be known
        (:func:`sentiloop.models.scores.champion_proba`); by default the champion scores them."""
        self.settings = settings
        self.champion_scores = champion_scores or champion.predict_proba
        self.progress = progress
        self.config = settings.retrain
        self.champion = champion
        self.pools = pools
        self.checkpoints = checkpoints
        self.mode = mode
        self.tracker = tracker
        self.on_iteration = on_iteration
        new = pools.new
        self.folds = np.array([fold_of(i, self.config.folds) for i in new.ids], dtype=np.int64)
        self.replay_folds = np.array([fold_of(i, self.config.folds) for i in pools.replay.ids], dtype=np.int64)
        self.labels = new.labels.copy()  # current (refined) labels
        self.weights = np.ones(len(new))
        self.dropped = np.zeros(len(new), dtype=bool)
        self.flagged = np.zeros(len(new), dtype=bool)
        self._scored: tuple[Ensemble, dict[str, np.ndarray]] | None = None  # the latest challenger's golden/recent scores

    # -- refinement ----------------------------------------------------------------------------
    def _refine(self, iteration: int, reference: Ensemble) -> RefinementStats:
        candidates = np.ones(len(self.pools.new), dtype=bool) if iteration == 1 else self.folds == (iteration - 2) % self.config.folds
        new = self.pools.new
        texts = [t for t, c in zip(new.texts, candidates) if c]
        if not texts:
            return RefinementStats(refinement_rate=0.0, data_quality_score=1.0, refined_samples=0, pool=0)
        probabilities = self.champion_scores(texts) if reference is self.champion else reference.predict_proba(texts)
        result = refine_dataset(texts, new.labels[candidates], probabilities,
                                domains=[d for d, c in zip(new.domains, candidates) if c],
                                confidence_threshold=self.config.confidence_threshold, action="flag")
        index = np.flatnonzero(candidates)
        flagged = index[result.flagged]
        self.flagged[index] = result.flagged
        action = self.config.refinement_action
        apply_action(action, flagged, probabilities[result.flagged].argmax(axis=1), self.labels, self.weights, self.dropped,
                     self.config.downweight)
        return RefinementStats.model_validate({**result.stats(), "action": action, "candidates": int(candidates.sum())})

    def _datasets(self, iteration: int) -> tuple[TrainData, TrainData]:
        """Train on new data minus this iteration's held-out fold, plus the replay minus its fold.

        The replayed rows are marked (``TrainData.replay``): a warm start distils the champion on them.
        Validation (early stopping, ensemble weights, the convergence metric) is both held-out folds,
        with stated labels (refinement never grades itself): the replay fold keeps the old distribution
        in view, so the weights and the stopping point are not chosen for the new data alone.
        """
        fold = (iteration - 1) % self.config.folds
        new, replay = self.pools.new, self.pools.replay
        held_out, replay_held = self.folds == fold, self.replay_folds == fold
        keep = ~held_out & ~self.dropped
        refined = Pool(new.ids, new.texts, self.labels, new.domains)
        replayed = int((~replay_held).sum())
        train = Pool.concat(refined.subset(keep), replay.subset(~replay_held)).data(
            weights=np.concatenate([self.weights[keep], np.ones(replayed)]))
        train = dataclasses.replace(train, replay=np.concatenate([np.zeros(int(keep.sum()), dtype=bool), np.ones(replayed, dtype=bool)]))
        if held_out.sum() >= MIN_VALIDATION:
            validation = Pool.concat(new.subset(held_out), replay.subset(replay_held)).data()
            old = np.concatenate([np.zeros(int(held_out.sum()), dtype=bool), np.ones(int(replay_held.sum()), dtype=bool)])
        else:
            validation = self.pools.golden.data()
            old = np.ones(len(validation), dtype=bool)
        return train, dataclasses.replace(validation, replay=old)

    # -- one iteration ---------------------------------------------------------------------------
    def _iteration(self, iteration: int, reference: Ensemble, detector: ConvergenceDetector,
                   history: Sequence[IterationResult]) -> tuple[Ensemble, IterationResult]:
        refinement = self._refine(iteration, reference)
        train, validation = self._datasets(iteration)
        budget = WarmStart(self.config, iteration, self.checkpoints.run_dir / "dictionary_backups")
        members, durations, strategies, optimizers, scored = {}, {}, {}, {}, {}
        if self.progress is not None:
            self.progress.update(iteration=iteration, phase="training", members_done={})
        for name in in_training_order(list(self.champion.members)):
            started = time.monotonic()
            log.info("iteration %d: retraining %s (%s) on %d examples", iteration, name, self.mode, len(train))
            if self.progress is not None:
                self.progress.update(member=name)
            member, report, strategy = retrain_member(name, self.champion.members[name], train, validation, self.mode, self.settings, budget)
            members[name], strategies[name] = member, strategy
            if (known := report.validation_probabilities) is not None and len(known) == len(validation):
                scored[name] = known  # what early stopping already scored: no second pass
            durations[name] = time.monotonic() - started
            if self.progress is not None:
                self.progress.member_done(name, durations[name])
            if isinstance(member, HasOptimizerState) and (state := member.optimizer_state()) is not None:
                optimizers[name] = state
        if self.progress is not None:
            self.progress.update(phase="evaluating")
        val_probs = {name: scored[name] if name in scored else m.predict_proba(validation.texts) for name, m in members.items()}
        assert validation.replay is not None
        weights = (weights_for(val_probs, validation.labels, validation.replay, self.champion.weights) if len(members) > 1
                   else {n: 1.0 for n in members})
        class_bias = class_bias_for(combine(val_probs, weights), validation.labels, validation.replay)
        balance = balance_check(val_probs, weights, validation.labels)
        if balance.flagged:
            log.warning("iteration %d: %s", iteration, balance.reason)
        lineage = {k: v for k, v in self.champion.info.items() if k != "version"}  # keeps the dataset it descends from
        challenger = Ensemble(members, weights, self.champion.label_names, info={**lineage, "iteration": iteration, "mode": self.mode},
                              class_bias=class_bias)
        metrics = self._evaluate(challenger, validation, val_probs)
        variance = prediction_variance(val_probs)
        new = self.pools.new  # the feedback pool: refinement flags refer to it
        bias = detect_data_bias(new.labels, len(self.champion.label_names), new.domains,
                                sorted(set(self.pools.golden.domains)), self.flagged, val_probs)
        for check in bias:
            if check.flagged:
                log.warning("iteration %d: bias in %s (score %.2f): %s", iteration, check.name, check.bias_score, check.description)
        stop = detector.check(metrics[ENSEMBLE][VALIDATION], refinement.refinement_rate, variance)
        result = IterationResult(
            iteration=iteration, metrics=metrics, prediction_variance=variance, refinement=refinement, weights=weights,
            balance=Balance(contributions={k: float(v) for k, v in balance.contributions.items()}, ratio=float(balance.ratio),
                            flagged=bool(balance.flagged)),
            bias=tuple(BiasFinding(name=c.name, bias_score=float(c.bias_score), flagged=bool(c.flagged), description=c.description)
                       for c in bias),
            durations=durations, strategies=strategies, stop_reason=stop)
        challenger.metrics = {"iteration": metrics}
        self.checkpoints.save_iteration(iteration, challenger, [r.model_dump(mode="json") for r in (*history, result)], optimizers,
                                        self._refinement_state())
        return challenger, result

    # -- resume --------------------------------------------------------------------------------
    def _refinement_state(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels, "weights": self.weights, "dropped": self.dropped, "flagged": self.flagged}

    def restore(self, point: ResumePoint) -> tuple[int, Ensemble, list[IterationResult]]:
        """Take up an interrupted run at ``point``: (next iteration, its refinement reference, the results so far)."""
        state = point.refinement
        for name, current in self._refinement_state().items():
            saved = state.get(name)
            if saved is None or saved.shape != current.shape:
                raise CheckpointError(f"iteration {point.iteration}'s refinement state has no {name!r} of {len(current)} values for this pool")
            current[...] = saved
        history = [IterationResult.model_validate(entry) for entry in point.history]
        return point.iteration + 1, point.ensemble, history

    def _evaluate(self, challenger: Ensemble, validation: TrainData, val_probs: dict[str, np.ndarray]) -> Accuracy:
        """``{"ensemble" | member: {split: accuracy}}``: the held-out folds (``validation``), golden and recent."""
        metrics: Accuracy = {ENSEMBLE: {VALIDATION: accuracy(challenger.vote(val_probs), validation.labels)}}
        metrics.update({name: {VALIDATION: accuracy(p, validation.labels)} for name, p in val_probs.items()})
        self._scored = (challenger, {})
        splits: tuple[tuple[Split, Pool], ...] = ((GOLDEN, self.pools.golden), (RECENT, self.pools.recent))
        for split, pool in splits:
            if len(pool):
                probs = challenger.member_probabilities(pool.texts)
                self._scored[1][split] = combined = challenger.vote(probs)
                metrics[ENSEMBLE][split] = accuracy(combined, pool.labels)
                for name, p in probs.items():
                    metrics.setdefault(name, {})[split] = accuracy(p, pool.labels)
        return metrics

    # -- the cycle -----------------------------------------------------------------------------
    def run(self, start_iteration: int = 1, reference: Ensemble | None = None, history: Sequence[IterationResult] = ()) -> CycleResult:
        """Iterate from ``start_iteration``; ``reference`` and ``history`` continue an interrupted run
        (:meth:`restore`): the convergence rules see the earlier iterations again, as if never stopped."""
        detector = ConvergenceDetector(self.config.convergence)
        result = CycleResult(reference, list(history)) if reference is not None and history else None
        for done in history:
            detector.check(done.metrics[ENSEMBLE][VALIDATION], done.refinement.refinement_rate, done.prediction_variance)
            if done.stop_reason:
                assert result is not None
                result.stop_reason = f"converged at iteration {done.iteration}: {done.stop_reason}"
        reference = reference or self.champion
        for iteration in range(start_iteration, self.config.max_iterations + 1):
            if result is not None and result.stop_reason:
                break
            log.info("retrain iteration %d/%d", iteration, self.config.max_iterations)
            challenger, outcome = self._iteration(iteration, reference, detector, result.iterations if result else ())
            if self.tracker is not None:
                self.tracker.log_metrics(outcome.mlflow_metrics(), step=iteration)
            if self.on_iteration is not None:
                self.on_iteration(outcome)
            result = result or CycleResult(challenger)
            result.challenger = challenger
            result.iterations.append(outcome)
            reference = challenger
            if outcome.stop_reason:
                result.stop_reason = f"converged at iteration {iteration}: {outcome.stop_reason}"
        assert result is not None, "max_iterations must be >= start_iteration"
        if not result.stop_reason:
            result.stop_reason = f"reached max_iterations ({self.config.max_iterations})"
        result.gate = self.gate(result.challenger)
        return result

    def gate(self, challenger: Ensemble) -> GateResult:
        golden, recent = self.pools.golden, self.pools.recent
        # The last iteration already scored golden and recent with the challenger: no second inference pass.
        scored = self._scored[1] if self._scored is not None and self._scored[0] is challenger else {}

        def challenger_probs(split: str, pool: Pool) -> np.ndarray:
            return scored[split] if split in scored else challenger.predict_proba(pool.texts)

        return promotion_gate(
            self.champion_scores(golden.texts), challenger_probs("golden", golden), golden.labels,
            self.champion_scores(recent.texts), challenger_probs("recent", recent), recent.labels,
            self.config.gate, self.champion.info.get(GOLDEN_BEST) if self.pools.golden_fixed else None,
        )
