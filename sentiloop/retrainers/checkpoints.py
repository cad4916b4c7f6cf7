"""Unified per-iteration checkpoints of a retrain cycle (seed ``UnifiedCheckpointManager``).

Layout: ``data_dir/retrain/<run_id>/state.json`` (status, trigger, parameters, a line per iteration) and
``iteration_NNNN/`` = the ensemble (``members/<name>/`` + ``ensemble.json``), ``optimizers/<name>.safetensors``
(+ ``.json`` for the scalar parts; the seed's record of each member's optimiser), ``cycle.json`` (this
iteration's metrics, weights, refinement statistics), ``history.json`` (every iteration's so far),
``refinement.safetensors`` (the refined labels, weights, dropped and flagged marks of the new data) and
a sha256 ``manifest.json`` over everything. Each iteration directory is written with
:func:`sentiloop.files.atomic_directory`, so it exists whole or not at all, the old or the new; only the
newest ``keep`` are retained. The newest one is all a resume needs (:meth:`CheckpointManager.resume_point`):
a run whose state still says ``running`` after its process died continues from it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory, atomic_write_json, read_json

if TYPE_CHECKING:
    from sentiloop.models.fitting import OptimizerState
from sentiloop.models.checkpoint import verify_member_dir, write_manifest
from sentiloop.models.ensemble import Ensemble

_ITERATION = re.compile(r"^iteration_(\d{4})$")
CYCLE_FILE = "cycle.json"
HISTORY_FILE = "history.json"
REFINEMENT_FILE = "refinement.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class ResumePoint:
    """The newest complete iteration of an interrupted run: enough to run the next one as if never stopped."""

    iteration: int
    ensemble: Ensemble  # that iteration's challenger: the next iteration's refinement reference
    history: list[dict[str, Any]]  # every iteration's result up to it, as saved
    refinement: dict[str, np.ndarray]  # the refined labels, weights, dropped and flagged marks


class CheckpointManager:
    """Checkpoints of one retrain run."""

    def __init__(self, root: Path, run_id: str, keep: int = 3) -> None:
        self.run_dir = root / run_id
        self.run_id = run_id
        self.keep = keep

    @classmethod
    def start(cls, root: Path, trigger: str, reason: str, keep: int = 3, params: dict[str, Any] | None = None) -> CheckpointManager:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        manager = cls(root, run_id, keep)
        manager.run_dir.mkdir(parents=True)
        manager.write_state({"run_id": run_id, "status": "running", "trigger": trigger, "reason": reason,
                             "started_ms": int(time.time() * 1000), "params": params or {}, "iterations": []})
        return manager

    # -- run state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return read_json(self.run_dir / STATE_FILE)

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / STATE_FILE, state)

    def finish(self, status: str, **fields: Any) -> None:
        state = self.state()
        state.update(status=status, finished_ms=int(time.time() * 1000), **fields)
        self.write_state(state)

    # -- iterations ----------------------------------------------------------------------------
    def iterations(self) -> list[int]:
        if not self.run_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.run_dir.iterdir() if p.is_dir() and (m := _ITERATION.match(p.name)))

    def iteration_dir(self, iteration: int) -> Path:
        return self.run_dir / f"iteration_{iteration:04d}"

    def save_iteration(self, iteration: int, ensemble: Ensemble, history: Sequence[dict[str, Any]],
                       optimizer_states: Mapping[str, OptimizerState] | None = None,
                       refinement: Mapping[str, np.ndarray] | None = None) -> Path:
        """Write iteration ``iteration`` atomically; prune to the newest ``keep``.

        ``history``: every iteration's result so far, this one last. ``optimizer_states``: member →
        (tensors by name, JSON-able rest), as members' ``optimizer_state()``. ``refinement``: named
        arrays of the cycle's refinement state.
        """
        from safetensors.numpy import save_file as save_arrays

        cycle = history[-1]
        target = self.iteration_dir(iteration)
        with atomic_directory(target) as tmp:
            for name, member in ensemble.members.items():
                member.save(tmp / "members" / name)
            atomic_write_json(tmp / "ensemble.json", ensemble.document())
            for name, (tensors, scalars) in (optimizer_states or {}).items():
                if not tensors:
                    continue
                (tmp / "optimizers").mkdir(exist_ok=True)
                save_arrays(tensors, str(tmp / "optimizers" / f"{name}.safetensors"))
                (tmp / "optimizers" / f"{name}.json").write_text(json.dumps(scalars, default=float), encoding="utf-8")
            atomic_write_json(tmp / CYCLE_FILE, {"iteration": iteration, "timestamp_ms": int(time.time() * 1000), **cycle})
            atomic_write_json(tmp / HISTORY_FILE, list(history))
            if refinement:
                save_arrays({name: np.ascontiguousarray(value) for name, value in refinement.items()}, str(tmp / REFINEMENT_FILE))
            write_manifest(tmp, "retrain-iteration", {"iteration": iteration, "run_id": self.run_id})
        state = self.state()
        state["iterations"].append({"iteration": iteration, **{k: v for k, v in cycle.items() if k in ("metrics", "stop_reason")}})
        self.write_state(state)
        for old in self.iterations()[: -self.keep]:
            shutil.rmtree(self.iteration_dir(old), ignore_errors=True)
        return target

    def load_iteration(self, iteration: int | None = None) -> tuple[int, Ensemble, dict[str, Any]]:
        """Verify (sha256 manifest) and load an iteration, by default the newest one."""
        available = self.iterations()
        if not available:
            raise CheckpointError(f"run {self.run_id} has no iteration checkpoint")
        iteration = available[-1] if iteration is None else iteration
        directory = self.iteration_dir(iteration)
        verify_member_dir(directory, "retrain-iteration")
        cycle = read_json(directory / CYCLE_FILE)
        return iteration, Ensemble.load(directory), cycle

    def resume_point(self) -> ResumePoint:
        """The newest iteration checkpoint, verified, with what the cycle needs to go on from it."""
        from safetensors.numpy import load_file as load_arrays

        iteration, ensemble, _cycle = self.load_iteration()
        directory = self.iteration_dir(iteration)
        history = read_json(directory / HISTORY_FILE) if (directory / HISTORY_FILE).is_file() else None
        if not isinstance(history, list) or not history:
            raise CheckpointError(f"{directory} has no {HISTORY_FILE}: written by a version that could not resume")
        refinement = load_arrays(str(directory / REFINEMENT_FILE)) if (directory / REFINEMENT_FILE).is_file() else {}
        return ResumePoint(iteration, ensemble, history, refinement)


INTERRUPTED = ("running", "interrupted")  # left running by a dead process; marked so by the daemon that saw it die


def interrupted_runs(root: Path) -> list[CheckpointManager]:
    """Runs whose process died mid-cycle, oldest first (run ids start with their start time)."""
    if not root.is_dir():
        return []
    runs = []
    for run_dir in sorted(root.iterdir()):
        manager = CheckpointManager(root, run_dir.name)
        if (run_dir / STATE_FILE).is_file() and manager.state().get("status") in INTERRUPTED:
            runs.append(manager)
    return runs


def discard(manager: CheckpointManager, reason: str) -> None:
    """Mark an interrupted run discarded and free its iteration checkpoints (the state file stays as a record)."""
    for iteration in manager.iterations():
        shutil.rmtree(manager.iteration_dir(iteration), ignore_errors=True)
    manager.finish("discarded", discard_reason=reason)
