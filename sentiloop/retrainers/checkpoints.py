"""Unified per-iteration checkpoints of a retrain cycle (seed ``UnifiedCheckpointManager``).

Layout: ``data_dir/retrain/<run_id>/state.json`` (status, trigger, history) and
``iteration_NNNN/`` = the ensemble (``members/<name>/`` + ``ensemble.json``), ``optimizers/<name>.safetensors``
(+ ``.json`` for the scalar parts), ``cycle.json`` (metrics, weights, refinement statistics) and a
sha256 ``manifest.json`` over everything. Each iteration directory is written with
:func:`sentiloop.files.atomic_directory`, so it exists whole or not at all, the old or the new; only the
newest ``keep`` are retained. A run whose state says ``running`` after a restart was interrupted:
``discard`` frees it (the next run starts again from the same pools; resuming is not implemented).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory, atomic_write_json, read_json

if TYPE_CHECKING:
    from sentiloop.models.torch_common import OptimizerState
from sentiloop.models.checkpoint import verify_member_dir, write_manifest
from sentiloop.models.ensemble import Ensemble

_ITERATION = re.compile(r"^iteration_(\d{4})$")
CYCLE_FILE = "cycle.json"
STATE_FILE = "state.json"


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

    def save_iteration(self, iteration: int, ensemble: Ensemble, cycle: dict[str, Any],
                       optimizer_states: Mapping[str, OptimizerState] | None = None) -> Path:
        """Write iteration ``iteration`` atomically; prune to the newest ``keep``.

        ``optimizer_states``: member → (tensors by name, JSON-able rest), as members' ``optimizer_state()``.
        """
        from safetensors.torch import save_file

        target = self.iteration_dir(iteration)
        with atomic_directory(target) as tmp:
            for name, member in ensemble.members.items():
                member.save(tmp / "members" / name)
            atomic_write_json(tmp / "ensemble.json", ensemble.document())
            for name, (tensors, scalars) in (optimizer_states or {}).items():
                if not tensors:
                    continue
                (tmp / "optimizers").mkdir(exist_ok=True)
                save_file(tensors, str(tmp / "optimizers" / f"{name}.safetensors"))
                (tmp / "optimizers" / f"{name}.json").write_text(json.dumps(scalars, default=float), encoding="utf-8")
            atomic_write_json(tmp / CYCLE_FILE, {"iteration": iteration, "timestamp_ms": int(time.time() * 1000), **cycle})
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

    def load_optimizer_state(self, iteration: int, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(tensors, JSON part) of a member's optimizer, as saved; feed to the member's ``load_optimizer_state``."""
        from safetensors.torch import load_file

        directory = self.iteration_dir(iteration) / "optimizers"
        verify_member_dir(self.iteration_dir(iteration), "retrain-iteration")
        scalars = read_json(directory / f"{name}.json")
        return load_file(str(directory / f"{name}.safetensors")), scalars


def interrupted_runs(root: Path) -> list[CheckpointManager]:
    """Runs left in status ``running`` (the process died mid-cycle)."""
    if not root.is_dir():
        return []
    runs = []
    for run_dir in sorted(root.iterdir()):
        manager = CheckpointManager(root, run_dir.name)
        if (run_dir / STATE_FILE).is_file() and manager.state().get("status") == "running":
            runs.append(manager)
    return runs


def discard(manager: CheckpointManager, reason: str) -> None:
    """Mark an interrupted run discarded and free its iteration checkpoints (the state file stays as a record)."""
    for iteration in manager.iterations():
        shutil.rmtree(manager.iteration_dir(iteration), ignore_errors=True)
    manager.finish("discarded", discard_reason=reason)
