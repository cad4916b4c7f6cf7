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

from sentiloop.buffer import open_buffer
from sentiloop.buffer.store import BufferStore
from sentiloop.config import Settings
from sentiloop.errors import CheckpointError
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.scores import ScoreStore, champion_proba
from sentiloop.models.store import ModelStore
from sentiloop.retrainers.checkpoints import CheckpointManager, ResumePoint, discard, interrupted_runs
from sentiloop.retrainers.cycle import GOLDEN_BEST, CycleResult, RetrainCycle
from sentiloop.retrainers.data import RETRAIN_MARK, CyclePools, assemble_pools
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


def pending_resume(settings: Settings) -> CheckpointManager | None:
    """The run a dead worker left ``running``, if one can be resumed; every other such run is discarded.

    Only the newest can be: an older one's pools were taken up by a later run. A run killed before its
    first iteration checkpoint has nothing to resume from.
    """
    interrupted = interrupted_runs(retrain_root(settings))
    for run in interrupted[:-1]:
        _discard(run, "a newer run was interrupted after it")
    if interrupted and not interrupted[-1].iterations():
        _discard(interrupted[-1], "the process running it stopped before its first iteration checkpoint")
        return None
    return interrupted[-1] if interrupted else None


def mark_interrupted(settings: Settings, why: str) -> list[str]:
    """Record that the runs left ``running`` lost their process (``why``); the next retrain resumes the newest."""
    runs = interrupted_runs(retrain_root(settings))
    for run in runs:
        run.finish("interrupted", interrupted_because=why)
    return [run.run_id for run in runs]


def _discard(run: CheckpointManager, reason: str) -> None:
    discard(run, reason)
    log.warning("discarded interrupted retrain run %s: %s", run.run_id, reason)


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
    store: BufferStore
    interrupted: CheckpointManager | None  # a run a killed worker left behind, resumed by the next run if still valid
    scores: ScoreStore  # the champion's scores the daemon already computed; this run adds the rest
    tracker: Callable[[], Tracker | None]  # built only when a run gets past the skip check (MLflow takes seconds)

    @classmethod
    def build(cls, settings: Settings) -> RetrainWorker:
        interrupted = pending_resume(settings)  # before anything else reads the run records
        models = ModelStore(settings.data_dir)
        models.champion_path()  # no champion: refused here, before a buffer is opened (or created)
        return cls(settings, models, open_buffer(settings), interrupted, ScoreStore.for_settings(settings),
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
        resumed = self._resumable(champion, champion_version, mode)
        if resumed is not None:
            checkpoints, pools, point = resumed
            trigger, reason = checkpoints.state().get("trigger", trigger), checkpoints.state().get("reason", reason)
            log.info("resuming retrain %s after iteration %d", checkpoints.run_id, point.iteration)
        else:
            point = None
            pools = assemble_pools(settings, store, champion.info, recent_since, full=mode == "full")
            if len(pools.new) < settings.retrain.min_new_events and not force:
                return RetrainSummary(
                    status=RetrainStatus.SKIPPED, trigger=trigger, reason=reason, pools=PoolSizes.model_validate(pools.summary()),
                    why=f"{len(pools.new)} new labelled events < retrain.min_new_events {settings.retrain.min_new_events}")
            checkpoints = CheckpointManager.start(retrain_root(settings), trigger, reason, settings.retrain.keep_checkpoints,
                                                  {**seed_params(settings, mode), "champion": champion_version, "recent_since": recent_since,
                                                   "pools_fingerprint": pools.fingerprint(), **pools.summary()})
        tracker = self.tracker()
        reporter = ProgressFile(progress, settings.retrain.max_iterations) if progress is not None else None
        cycle = RetrainCycle(settings, champion, pools, checkpoints, mode, tracker, progress=reporter,
                             champion_scores=partial(champion_proba, self.scores, champion_version, champion))
        try:
            if tracker is not None:
                with tracker.run(f"retraining_{time.strftime('%Y%m%d_%H%M')}", seed_params(settings, mode),
                                 tags={"trigger": trigger, "reason": reason[:250], "run_id": checkpoints.run_id}):
                    result, version, registered = _cycle_and_gate(cycle, champion_version, checkpoints, tracker, models, reporter, point,
                                                                  shadowing(settings))
            else:
                result, version, registered = _cycle_and_gate(cycle, champion_version, checkpoints, None, models, reporter, point,
                                                              shadowing(settings))
        except BaseException as exc:
            checkpoints.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        store.set_mark(RETRAIN_MARK, pools.until_seq)
        self.scores.retain({v for v in (champion_version, models.champion()) if v is not None})  # older champions' are of no use
        gate = result.gate
        assert gate is not None
        status = RetrainStatus.REJECTED if not gate.promote else RetrainStatus.SHADOW if shadowing(settings) else RetrainStatus.PROMOTED
        summary = RetrainSummary(
            status=status, trigger=trigger, reason=reason,
            run_id=checkpoints.run_id, seconds=round(time.monotonic() - started, 1), version=version, registered_version=registered,
            champion_before=champion_version, stop_reason=result.stop_reason, gate_reasons=tuple(gate.reasons), gate_metrics=gate.metrics,
            iterations=tuple(result.iterations), pools=PoolSizes.model_validate(pools.summary()),
            resumed_after_iteration=None if point is None else point.iteration)
        checkpoints.finish("completed", summary=summary.record())
        return summary

    def _resumable(self, champion: Ensemble, champion_version: int | None,
                   mode: Mode) -> tuple[CheckpointManager, CyclePools, ResumePoint] | None:
        """The interrupted run, its pools assembled again and its newest checkpoint, if nothing it depends
        on changed since; else it is discarded, with the reason in its state.json and the log."""
        run, self.interrupted = self.interrupted, None
        if run is None:
            return None
        params = run.state().get("params", {})
        expected = {**seed_params(self.settings, mode), "champion": champion_version}
        changed = sorted(key for key, value in expected.items() if params.get(key) != value)
        if changed:
            what = "the champion" if changed == ["champion"] else "the retrain settings (" + ", ".join(changed) + ")"
            _discard(run, f"{what} changed since it started")
            return None
        try:
            pools = assemble_pools(self.settings, self.store, champion.info, params.get("recent_since"), full=mode == "full",
                                   until_seq=params.get("until_seq"))
            if pools.fingerprint() != params.get("pools_fingerprint"):
                _discard(run, "its data pools changed since it started (events removed, or another retrain moved the mark)")
                return None
            point = run.resume_point()
        except CheckpointError as exc:
            _discard(run, f"its newest checkpoint cannot be resumed from: {exc}")
            return None
        state = run.state()
        state["status"] = "running"
        state.setdefault("resumed", []).append({"after_iteration": point.iteration, "at_ms": int(time.time() * 1000)})
        run.write_state(state)
        return run, pools, point


def _tracker(settings: Settings) -> Tracker | None:
    if not settings.mlflow.enabled:
        return None
    from sentiloop.monitoring.tracking import Tracker

    return Tracker(settings)


def shadowing(settings: Settings) -> bool:
    """A challenger the gate accepts waits for a shadow run on live traffic (the daemon runs it) instead of serving at once."""
    return settings.retrain.shadow.events > 0


def _cycle_and_gate(cycle: RetrainCycle, champion_version: int | None, checkpoints: CheckpointManager, tracker: Tracker | None,
                    models: ModelStore, progress: ProgressFile | None = None,
                    resume: ResumePoint | None = None, shadow: bool = False) -> tuple[CycleResult, int, int | None]:
    """The cycle (from ``resume`` if given), the gate, the challenger saved (and promoted if the gate agrees
    and no shadow run is asked for): (result, its version, registry version)."""
    pools = cycle.pools
    result = cycle.run(*cycle.restore(resume)) if resume is not None else cycle.run()
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
    promote = gate.promote and not shadow
    if promote:
        models.set_champion(version, f"promoted by retrain {checkpoints.run_id}: "
                            + ", ".join(f"{k}={v:.4f}" for k, v in gate.metrics.flat().items()))
    registered = None
    if tracker is not None:
        tracker.log_metrics({f"gate_{k}": v for k, v in gate.metrics.flat().items()})
        tracker.log_artifacts(checkpoints.iteration_dir(result.iterations[-1].iteration), "checkpoint")
        registered = tracker.register_ensemble(path, "challenger", f"v{version:04d} from retrain {checkpoints.run_id}")
        models.record_registration(version, registered)
        if promote:
            tracker.set_alias("champion", registered)
    verdict = "refused: " + "; ".join(gate.reasons) if not gate.promote else "passed; shadow run next" if shadow else "PROMOTED"
    log.info("retrain %s: %s; gate %s", checkpoints.run_id, result.stop_reason, verdict)
    return result, version, registered
