"""The DecisionPolicy: turn signals ("what changed") into a retrain decision ("act now, or not").

Rules, in order: a manual request wins (it obeys the cool-down and rate limit unless forced, and
never runs two at once); during warm-up nothing
automatic fires; during the cool-down after a retrain nothing automatic fires; a drift signal must
persist for ``hysteresis`` consecutive checks; at most ``max_retrains`` automatic retrains per
``window_s``. The caller resets the detectors once it acts on a drift signal, so a flag never stays
stuck; a suppressed signal stays latched and acts when the cool-down or rate limit allows.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from sentiloop.monitoring.drift import Signal


@dataclass(frozen=True)
class Decision:
    """Retrain or not, the trigger that won, and why (recorded in metrics, MLflow and logs)."""

    retrain: bool
    trigger: str = ""
    reason: str = ""
    suppressed: str = ""


@dataclass
class DecisionPolicy:
    warmup_events: int = 1000
    cooldown_s: float = 1800.0
    hysteresis: int = 2
    max_retrains: int = 3
    window_s: float = 86_400.0
    seen_events: int = 0
    _streak: dict[str, int] = field(default_factory=dict)
    _history: deque[float] = field(default_factory=deque)
    _last_retrain: float | None = None

    def observe(self, events: int = 1) -> None:
        self.seen_events += events

    def decide(self, signals: Iterable[Signal], volume_reason: str = "", schedule_reason: str = "",
               manual_reason: str = "", now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        fired = [s for s in signals if s.fired]
        for signal in fired:
            self._streak[signal.name] = self._streak.get(signal.name, 0) + 1
        for name in list(self._streak):
            if name not in {s.name for s in fired}:
                self._streak[name] = 0  # hysteresis: the streak must be consecutive
        if manual_reason:  # the request was checked against blocked() when it was made (unless forced)
            return Decision(True, "manual", manual_reason)
        candidates: list[tuple[str, str]] = []
        persistent = [s for s in fired if self._streak.get(s.name, 0) >= self.hysteresis]
        if persistent:
            candidates.append(("drift", "; ".join(s.reason for s in persistent)))
        if volume_reason:
            candidates.append(("volume", volume_reason))
        if schedule_reason:
            candidates.append(("schedule", schedule_reason))
        if not candidates:
            return Decision(False)
        trigger, reason = candidates[0]
        if self.seen_events < self.warmup_events:
            return Decision(False, trigger, reason, f"warm-up: {self.seen_events}/{self.warmup_events} events seen")
        blocked = self.blocked(now)
        return Decision(False, trigger, reason, blocked) if blocked else Decision(True, trigger, reason)

    def blocked(self, now: float | None = None) -> str:
        """Why the cool-down or the rate limit forbids a retrain now ("" when neither does).

        Automatic triggers and manual requests without ``force`` both obey it.
        """
        now = time.time() if now is None else now
        while self._history and now - self._history[0] > self.window_s:
            self._history.popleft()
        if self._last_retrain is not None and now - self._last_retrain < self.cooldown_s:
            return f"cool-down: {now - self._last_retrain:.0f}s since the last retrain < {self.cooldown_s:.0f}s"
        if len(self._history) >= self.max_retrains:
            return f"rate limit: {len(self._history)} retrains in the last {self.window_s:.0f}s"
        return ""

    def retune(self, warmup_events: int, cooldown_s: float, hysteresis: int, max_retrains: int, window_s: float) -> None:
        """New limits from a config reload; the history (cool-down, rate limit) is kept."""
        self.warmup_events, self.cooldown_s, self.hysteresis = warmup_events, cooldown_s, hysteresis
        self.max_retrains, self.window_s = max_retrains, window_s

    def record_retrain(self, now: float | None = None) -> None:
        """Call when a retrain starts: starts the cool-down, counts toward the rate limit, clears streaks."""
        now = time.time() if now is None else now
        self._last_retrain = now
        self._history.append(now)
        self._streak.clear()
