"""Config hot reload: parse a new Settings, decide what may change live, and watch the file.

A reload never mutates the running Settings: it builds a new, frozen one — the new file's values
for every live key, the running values for the keys that need a restart — and the daemon swaps
it in whole and hands each component its section (``apply``). A change to a restart-only key is
reported by name and otherwise ignored; an invalid file is refused and the old config stays.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiloop.config import Settings

log = logging.getLogger(__name__)

# Key paths (prefixes) that only take effect after a restart: where data lives, what the labels
# mean, how to reach Kafka, which ports are bound, which model files and threads are used.
RESTART_ONLY = (
    "language", "data_dir", "labels", "kafka", "metrics", "admin", "mlflow", "buffer.synchronous", "buffer.lock_timeout_s",
    "dictionary.tokenizer", "dictionary.seed_lexicon", "models.threads", "models.seed", "models.bert", "models.lstm",
    "models.bilstm", "models.word_sentiment_lexicon",
)
# Live although under a restart-only section: retrain budgets, read by the next worker at its launch.
LIVE_INSIDE_RESTART_ONLY = ("models.bert.fine_tune_epochs", "models.bert.fine_tune_max_steps")


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _restore(data: dict[str, Any], kept: dict[str, Any], path: str) -> None:
    """Put the running value of ``path`` (a dotted key) back into ``data``."""
    *parents, last = path.split(".")
    for part in parents:
        data, kept = data[part], kept[part]
    if last in kept:
        data[last] = kept[last]
    else:  # a key the running settings do not have (a new map entry): not applied either
        data.pop(last, None)


def _restart_only(path: str) -> bool:
    if path in LIVE_INSIDE_RESTART_ONLY:
        return False
    return any(path == p or path.startswith(p + ".") for p in RESTART_ONLY)


@dataclass
class ReloadPlan:
    effective: Settings
    applied: list[str] = field(default_factory=list)  # live keys that changed
    ignored: list[str] = field(default_factory=list)  # restart-only keys that changed

    @property
    def result(self) -> str:
        return "partial" if self.ignored else "applied"


def plan_reload(running: Settings, new: Settings) -> ReloadPlan:
    """The settings to run with: ``new`` for live keys, ``running`` for restart-only ones."""
    old_leaves, new_leaves = _leaves(running.model_dump(mode="json")), _leaves(new.model_dump(mode="json"))
    changed = sorted(k for k in old_leaves.keys() | new_leaves.keys() if old_leaves.get(k) != new_leaves.get(k))
    secrets_changed = [f"{s}.{k}" for s, k in (("kafka", "sasl_plain_password"), ("admin", "token"))
                       if getattr(getattr(running, s), k) != getattr(getattr(new, s), k)]  # dumps mask them
    changed = sorted(set(changed) | set(secrets_changed))
    ignored = [k for k in changed if _restart_only(k)]
    applied = [k for k in changed if not _restart_only(k)]
    data, kept = new.model_dump(), running.model_dump()
    for key in ignored:  # leaf by leaf: a live key inside a restart-only section keeps its new value
        _restore(data, kept, key)
    return ReloadPlan(Settings.model_validate(data), applied, ignored)


class ConfigWatcher:
    """Reload on a change of the file on disk (debounced) and on request (SIGHUP), on its own thread.

    Debounced: a change is acted on once the file's (mtime, size, inode) has not moved for
    ``debounce_s``, so an editor's or a deploy tool's half-written file is never read; a file that
    is then still invalid is refused by the reload itself.
    """

    def __init__(self, path: Path, reload: Callable[[str], Any], debounce_s: float = 1.0, interval_s: float = 0.5) -> None:
        self.path, self.reload = path, reload
        self.debounce_s, self.interval_s = debounce_s, interval_s
        self._requested = threading.Event()
        self._stop = threading.Event()
        self._seen = self._stamp()
        self._thread = threading.Thread(target=self._loop, name="sentiloop-config-watch", daemon=True)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def start(self) -> ConfigWatcher:
        self._thread.start()
        return self

    def request(self) -> None:
        """Ask for a reload now (safe from a signal handler: it only sets an event)."""
        self._requested.set()

    def stop(self) -> None:
        self._stop.set()
        self._requested.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._requested.wait(self.interval_s):
                self._requested.clear()
                if not self._stop.is_set():
                    self._seen = self._stamp()
                    self._safely("signal")
                continue
            stamp = self._stamp()
            if stamp == self._seen or stamp is None:
                continue
            while not self._stop.wait(self.debounce_s):  # settle: unchanged for debounce_s
                again = self._stamp()
                if again == stamp:
                    break
                stamp = again
            self._seen = stamp
            self._safely("file change")

    def _safely(self, why: str) -> None:
        try:
            self.reload(why)
        except Exception:  # the watcher outlives any one reload
            log.exception("config reload (%s) failed", why)
