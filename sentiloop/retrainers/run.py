"""One retrain run end to end: pools → cycle → gate → (promotion | challenger only) → records.

Used by ``sentiloop retrain`` in the foreground and by the daemon's worker process. Whatever happens,
the champion keeps serving until a promotion has been fully written (new version on disk, pointer
swapped atomically, registry alias moved); a failure leaves it untouched and is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiloop.buffer.sqlite import SQLiteBufferStore
from sentiloop.config import Settings
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.scores import ScoreStore, champion_proba
from sentiloop.models.store import ModelStore
from sentiloop.retrainers.checkpoints import CheckpointManager, discard, interrupted_runs
from sentiloop.retrainers.cycle import GOLDEN_BEST, CycleResult, RetrainCycle
from sentiloop.retrainers.data import RETRAIN_MARK, assemble_pools
from sentiloop.retrainers.progress import ProgressFile
from sentiloop.retrainers.results import GOLDEN, PoolSizes, RetrainStatus, RetrainSummary
from sentiloop.retrainers.strategies import Mode

if TYPE_CHECKING:
    from sentiloop.monitoring.tracking import Tracker

log = logging.getLogger(__name__)


def retrain_root(settings: Settings) -> Path:
    return settings.data_dir / "retrain"


def seed_params(settings: Settings, mode: Mode) -> dict[str, Any]:
    """The seed's logged parameters plus what makes a run reproducible."""
    r = settings.retrain
    return {"max_iterations": r.max_iterations, "convergence_threshold": r.convergence.min_delta,
            "confidence_threshold": r.confidence_threshold, "patience": r.convergence.patience, "mode": mode,
            "refinement_action": r.refinement_action, "replay_ratio": r.replay_ratio, "folds": r.folds,
            "members": ",".join(settings.models.enabled), "seed": settings.models.seed}


def handle_interrupted(settings: Settings) -> list[str]:
    """Runs a dead process left ``running``: discarded (resume happens by re-running on the same pools)."""
    handled = []
    for run in interrupted_runs(retrain_root(settings)):
        discard(run, "the process running it stopped before it finished")
        log.warning("discarded interrupted retrain run %s", run.run_id)
        handled.append(run.run_id)
    return handled


def run_retrain(settings: Settings, trigger: str, reason: str, mode: Mode | None = None, force: bool = False,
                recent_since: int | None = None, progress: Path | None = None) -> RetrainSummary:
    """Run one retrain; returns its summary (also written to the run's state.json): promoted, rejected or skipped.

    A run that raises is recorded ``failed`` in its state.json and the exception propagates.

    ``recent_since`` (a buffer seq, e.g. where drift was detected) makes the gate judge on the holdout
    events after it: the regime the retrain is for. ``progress`` is a JSON file kept up to date with the
    iteration, the member being retrained and the phase (the daemon shows it in /v1/status).
    """
    worker = RetrainWorker.build(settings)
    try:
        return worker.run(trigger, reason, mode or settings.retrain.mode, force, recent_since, progress)
    finally:
        worker.close()


@dataclass
class RetrainWorker:
    """The retrain worker's composition root: every part one run uses is built in ``build``, nowhere else.

    The daemon's worker process and ``sentiloop retrain`` both go through it; a test can assemble one
    from its own parts (another model store, a tracker factory that records).
    """

    settings: Settings
    models: ModelStore
    store: SQLiteBufferStore
    scores: ScoreStore  # the champion's scores the daemon already computed; this run adds the rest
    tracker: Callable[[], Tracker | None]  # built only when a run gets past the skip check (MLflow takes seconds)

    @classmethod
    def build(cls, settings: Settings) -> RetrainWorker:
        handle_interrupted(settings)  # before anything else reads the run records
        models = ModelStore(settings.data_dir)
        models.champion_path()  # no champion: refused here, before a buffer is opened (or created)
        return cls(settings, models, SQLiteBufferStore.for_settings(settings), ScoreStore.for_settings(settings),
                   lambda: _tracker(settings))

    def close(self) -> None:
        self.store.close()
        self.scores.close()

    def run(self, trigger: str, reason: str, mode: Mode, force: bool = False, recent_since: int | None = None,
            progress: Path | None = None) -> RetrainSummary:
        settings, models, store = self.settings, self.models, self.store
        champion_version = models.champion()
        champion = Ensemble.load(models.champion_path(), only=settings.models.enabled)
        started = time.monotonic()
        pools = assemble_pools(settings, store, champion.info, recent_since, full=mode == "full")
        if len(pools.new) < settings.retrain.min_new_events and not force:
            return RetrainSummary(
                status=RetrainStatus.SKIPPED, trigger=trigger, reason=reason, pools=PoolSizes.model_validate(pools.summary()),
                why=f"{len(pools.new)} new labelled events < retrain.min_new_events {settings.retrain.min_new_events}")
        checkpoints = CheckpointManager.start(retrain_root(settings), trigger, reason, settings.retrain.keep_checkpoints,
                                              {**seed_params(settings, mode), "champion": champion_version, **pools.summary()})
        tracker = self.tracker()
        reporter = ProgressFile(progress, settings.retrain.max_iterations) if progress is not None else None
        cycle = RetrainCycle(settings, champion, pools, checkpoints, mode, tracker, progress=reporter,
                             champion_scores=partial(champion_proba, self.scores, champion_version, champion))
        try:
            if tracker is not None:
                with tracker.run(f"retraining_{time.strftime('%Y%m%d_%H%M')}", seed_params(settings, mode),
                                 tags={"trigger": trigger, "reason": reason[:250], "run_id": checkpoints.run_id}):
                    result, version, registered = _cycle_and_gate(cycle, champion_version, checkpoints, tracker, models, reporter)
            else:
                result, version, registered = _cycle_and_gate(cycle, champion_version, checkpoints, None, models, reporter)
        except BaseException as exc:
            checkpoints.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        store.set_mark(RETRAIN_MARK, pools.until_seq)
        self.scores.retain({v for v in (champion_version, models.champion()) if v is not None})  # older champions' are of no use
        gate = result.gate
        assert gate is not None
        summary = RetrainSummary(
            status=RetrainStatus.PROMOTED if gate.promote else RetrainStatus.REJECTED, trigger=trigger, reason=reason,
            run_id=checkpoints.run_id, seconds=round(time.monotonic() - started, 1), version=version, registered_version=registered,
            champion_before=champion_version, stop_reason=result.stop_reason, gate_reasons=tuple(gate.reasons), gate_metrics=gate.metrics,
            iterations=tuple(result.iterations), pools=PoolSizes.model_validate(pools.summary()))
        checkpoints.finish("completed", summary=summary.record())
        return summary


def _tracker(settings: Settings) -> Tracker | None:
    if not settings.mlflow.enabled:
        return None
    from sentiloop.monitoring.tracking import Tracker

    return Tracker(settings)


def _cycle_and_gate(cycle: RetrainCycle, champion_version: int | None, checkpoints: CheckpointManager, tracker: Tracker | None,
                    models: ModelStore, progress: ProgressFile | None = None) -> tuple[CycleResult, int, int | None]:
    """The cycle, the gate, the challenger saved (and promoted if the gate agrees): (result, its version, registry version)."""
    pools = cycle.pools
    result = cycle.run()
    if progress is not None:
        progress.update(phase="gate decided", promote=bool(result.gate and result.gate.promote),
                        gate_reasons=result.gate.reasons if result.gate else [])
    gate = result.gate
    assert gate is not None
    challenger = result.challenger
    challenger.info.update(parent=champion_version, run_id=checkpoints.run_id, stop_reason=result.stop_reason)
    if pools.golden_fixed:  # carried down the lineage: the gate's floor against accumulated forgetting
        challenger.info[GOLDEN_BEST] = max(gate.metrics.golden_reference, gate.metrics.of("challenger", GOLDEN))
    challenger.metrics = {"gate": gate.metrics.model_dump(mode="json"), "iterations": [it.metrics for it in result.iterations]}
    version, path = models.next_path()
    challenger.info["version"] = version
    challenger.save(path)
    if gate.promote:
        models.set_champion(version, f"promoted by retrain {checkpoints.run_id}: "
                            + ", ".join(f"{k}={v:.4f}" for k, v in gate.metrics.flat().items()))
    registered = None
    if tracker is not None:
        tracker.log_metrics({f"gate_{k}": v for k, v in gate.metrics.flat().items()})
        tracker.log_artifacts(checkpoints.iteration_dir(result.iterations[-1].iteration), "checkpoint")
        registered = tracker.register_ensemble(path, "challenger", f"v{version:04d} from retrain {checkpoints.run_id}")
        models.record_registration(version, registered)
        if gate.promote:
            tracker.set_alias("champion", registered)
    log.info("retrain %s: %s; gate %s%s", checkpoints.run_id, result.stop_reason, "PROMOTED" if gate.promote else "refused",
             "" if gate.promote else ": " + "; ".join(gate.reasons))
    return result, version, registered
