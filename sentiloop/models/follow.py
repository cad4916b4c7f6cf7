"""Following the MLflow registry's ``champion`` alias: how a replica on another host serves what the
leader promoted, with no shared disk.

When the alias moves, the follower downloads that registered version, verifies it
(``Ensemble.load``), keeps it as the next local version with its registry number, and points the
local champion at it; the retrain controller, which watches that pointer, then hot-swaps it as it
does a local promotion.
Edge-triggered: only a *move* of the alias acts (and the first look, so a new replica with an empty
data_dir starts serving), so a promotion in flight on the leader (local pointer moved, alias not yet)
is never undone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiloop.models.store import ModelStore

if TYPE_CHECKING:
    from sentiloop.config import Settings

log = logging.getLogger(__name__)


class RegistryFollower:
    """Looks at the alias every ``interval_s`` on a thread of its own (a slow registry never holds up
    retrain decisions); ``follow()`` is one look and says whether the local champion moved."""

    def __init__(self, settings: Settings, models: ModelStore, interval_s: float, busy: Callable[[], bool] = lambda: False) -> None:
        """``busy``: True while this replica's own retrain worker may write a new local version (the
        leader's): the follower waits, so the two never take the same version number."""
        self.settings, self.models, self.interval_s, self.busy = settings, models, interval_s, busy
        self.seen: int | None = None  # the registry version the alias named at the last look
        self._tracker: Any = None
        self._failure = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentiloop-follow", daemon=True)

    def start(self) -> RegistryFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            self.follow()
            if self._stop.wait(self.interval_s):
                return

    def follow(self) -> bool:
        if self.busy():
            return False  # looked at again after the worker ended (its own promotion moves the alias anyway)
        try:
            return self._follow()
        except Exception as exc:  # the registry may be down or a version broken: serve on, say it once
            if str(exc) != self._failure:
                log.warning("cannot follow the registry's champion alias (%s): %s", self.settings.mlflow.tracking_uri, exc)
            self._failure = str(exc)
            return False

    def _follow(self) -> bool:
        if self._tracker is None:
            from sentiloop.monitoring.tracking import Tracker

            self._tracker = Tracker(self.settings)
        registered = self._tracker.alias_version("champion")
        self._failure = ""
        if registered is None or registered == self.seen:
            return False
        local = self.models.local_version(registered)
        if local is None:
            local = self._download(registered)
        self.seen = registered
        if self.models.champion() == local:
            return False
        self.models.set_champion(local, f"followed the registry: {self.settings.mlflow.registered_model} version {registered} is champion")
        log.info("following the registry: champion is now registry version %d (local v%04d)", registered, local)
        return True

    def _download(self, registered: int) -> int:
        from sentiloop.models.ensemble import Ensemble

        self.models.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=self.models.root) as incoming:
            ensemble = self._tracker.download_ensemble(registered, Path(incoming))
            Ensemble.load(ensemble)  # refuse a tampered or partial download before it is a version
            version, path = self.models.next_path()
            shutil.move(str(ensemble), path)
        self.models.record_registration(version, registered)
        return version
