"""What the admin API can ask of a running daemon: the :class:`~sentiloop.daemon.api.Operations` of a Daemon.

Each answer is (HTTP status, JSON body). Nothing here runs on the poll loop: requests are served on
the HTTP server's worker threads, and every state change goes through the component that owns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentiloop.buffer.store import status_document
from sentiloop.daemon.api import Answer
from sentiloop.errors import SentiloopError, StorageUnavailable

if TYPE_CHECKING:
    from sentiloop.daemon.app import Daemon

TARGETS = ("ingestion", "retraining")


class DaemonOperations:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def liveness(self) -> tuple[bool, dict[str, object]]:
        return self.daemon.liveness()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return self.daemon.readiness()

    def status(self) -> dict[str, Any]:
        """The same JSON as ``sentiloop status --json``, plus ingestion, retraining and the champion."""
        d = self.daemon
        status: dict[str, Any] = {"data_dir": str(d.settings.data_dir)}
        try:
            assert d.store is not None
            status.update(status_document(d.store.stats(), str(d.settings.data_dir)))
        except StorageUnavailable as exc:
            status["buffer_error"] = str(exc)
        _ready, readiness = d.readiness()
        status["ingestion"] = readiness
        if d.controller is not None:
            status["retraining"] = d.controller.status()
        if d.monitor is not None:
            status["monitoring"] = d.monitor.label_free_status()
        served = d.serving.current
        status["champion"] = None if served is None else {
            "version": served.version, "weights": served.ensemble.weights, "members": list(served.ensemble.members),
            "metrics": served.ensemble.metrics, "loaded_ms": served.loaded_ms,
        }
        return status

    def predict(self, texts: list[str]) -> Answer:
        answer = self.daemon.serving.predict(texts)
        if answer is None:
            return 409, {"error": "no champion ensemble yet", "hint": "train one with `sentiloop train --profile fast`"}
        return 200, answer

    def retrain(self, mode: str | None, reason: str, force: bool) -> Answer:
        controller = self.daemon.controller
        if controller is None:
            return 409, {"accepted": False, "why": "continual learning is not running"}
        answer: Answer = controller.request(reason, mode, force)
        return answer

    def _switch(self, target: str, paused: bool) -> Answer:
        d = self.daemon
        chosen = TARGETS if target == "all" else (target,)
        if "ingestion" in chosen and d.consumer is not None:
            d.consumer.operator_paused = paused
        if "retraining" in chosen and d.controller is not None:
            d.controller.paused = paused
        return 200, {"ingestion_paused": bool(d.consumer and d.consumer.operator_paused),
                     "retraining_paused": bool(d.controller and d.controller.paused)}

    def pause(self, target: str) -> Answer:
        return self._switch(target, True)

    def resume(self, target: str) -> Answer:
        return self._switch(target, False)

    def reload(self) -> Answer:
        result = self.daemon.reload_config("POST /v1/reload")
        return (422 if result["result"] == "rejected" else 200), result

    def promote(self, version: int, reason: str) -> Answer:
        from sentiloop.models.champion import set_champion

        return self._champion_change(lambda: set_champion(self.daemon.settings, version, reason), reason)

    def rollback(self, reason: str) -> Answer:
        from sentiloop.models.champion import rollback

        return self._champion_change(lambda: rollback(self.daemon.settings, reason), reason)

    def _champion_change(self, change: Any, reason: str) -> Answer:
        try:
            result = change()
        except SentiloopError as exc:
            return 409, {"error": str(exc)}
        if self.daemon.controller is not None:
            self.daemon.controller.refresh_champion(reason=reason)  # hot swap now, not at the next tick
        return 200, result
