"""A retrain worker's progress, as a small JSON file the daemon reads for ``/v1/status`` and the demo.

The worker is another process: a file written atomically at each step (member started, member done,
evaluating, gate) is the simplest channel that survives either side dying. Reading never fails: a
missing or half-read file just means "no progress known yet".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sentiloop.files import atomic_write_json


class ProgressFile:
    def __init__(self, path: Path, max_iterations: int) -> None:
        self.path = path
        self.state: dict[str, Any] = {"iteration": 0, "max_iterations": max_iterations, "phase": "starting",
                                      "member": None, "members_done": {}, "started_ms": int(time.time() * 1000)}
        self._write()

    def update(self, **changes: Any) -> None:
        self.state.update(changes, updated_ms=int(time.time() * 1000))
        self._write()

    def member_done(self, name: str, seconds: float) -> None:
        done = {**self.state["members_done"], name: round(seconds, 1)}
        self.update(members_done=done, member=None)

    def _write(self) -> None:
        try:
            atomic_write_json(self.path, self.state)
        except OSError:
            pass  # progress is informational: a full disk must not fail the retrain over it


def read_progress(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
