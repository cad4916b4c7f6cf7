"""The DecisionPolicy: the retrain decision ("act now, or not") as an explicit state machine.

States (``policy.state``)::

    idle      nothing pending; each tick weighs the triggers
    settling  a drift was accepted: waiting for ``drift_settle_events`` labelled events after its detection,
              so the retrain has data from the new regime to learn from and to be judged on
    due       a retrain should start now (trigger, reason, recent_since, mode): the caller starts it
    running   a retrain runs; nothing else starts and manual requests are refused

Transitions (one method each; the caller feeds inputs with ``observe_*`` and then calls ``tick``)::

    idle     --tick: persistent drift, allowed, drift_settle_events > 0-->  settling
    idle     --tick: allowed drift (settle 0), volume or schedule-->  due
    settling --tick: drift_settle_events labelled events collected->  due      (recent_since = detection seq)
    settling --tick: an allowed volume or schedule trigger-------->  due      (recent_since = detection seq)
    idle, settling, due --request() (allowed, or forced)--------->  due      (trigger manual)
    due      --started()------------------------------------------>  running  (cool-down, rate limit, streaks)
    running  --finished(outcome)---------------------------------->  idle

Rules for the automatic triggers, in order: drift beats volume beats schedule; during warm-up
nothing automatic fires; during the cool-down after a retrain started nothing automatic fires; a
drift signal must persist for ``hysteresis`` consecutive ticks; at most ``max_retrains`` retrains
start per ``window_s``. A suppressed drift signal stays latched in the detectors (the caller resets
only the signals a decision names in ``consumed``), so it acts when the cool-down or rate limit
allows; a schedule tick is consumed by the tick that sees it, allowed or not. A manual request is
checked against the same cool-down and rate limit (and an operator's pause) when it is made; with
``force`` it goes through anyway, and it never starts while a retrain runs.

Time comes from the injected ``clock`` (default ``time.monotonic``), so tests drive it without
sleeping. All methods are thread-safe: requests arrive on the HTTP threads and schedule ticks on the
scheduler's thread while the controller thread ticks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from sentiloop.config import PolicyConfig, RetrainConfig
from sentiloop.monitoring.drift import Signal

Clock = Callable[[], float]


class RetrainState(StrEnum):
    IDLE = "idle"
    SETTLING = "settling"
    DUE = "due"
    RUNNING = "running"


class TransitionError(RuntimeError):
    """A transition asked for in a state that does not have it (e.g. ``started()`` when nothing is due)."""


@dataclass(frozen=True)
class Decision:
    """One tick's verdict: retrain or not, the trigger that won, and why (recorded in metrics, MLflow, logs).

    ``suppressed`` says what held a trigger back (warm-up, cool-down, rate limit); ``consumed`` names
    the drift signals this decision acted on, for the caller to reset in its detectors.
    """

    retrain: bool
    trigger: str = ""
    reason: str = ""
    suppressed: str = ""
    recent_since: int | None = None
    mode: str | None = None
    consumed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settling:
    """A drift retrain waiting for data from the new regime."""

    since_seq: int  # the buffer's newest label position when the drift was accepted
    reason: str


@dataclass(frozen=True)
class RequestAnswer:
    """The policy's answer to a manual request.

    ``blocked``: the pause, cool-down or rate limit that refused it, or that it was forced past.
    """

    accepted: bool
    running: bool = False
    blocked: str = ""


class DecisionPolicy:
    def __init__(self, config: PolicyConfig | None = None, volume_threshold: int = 2000, clock: Clock = time.monotonic) -> None:
        self.config = config or PolicyConfig()  # retrain.policy, used as it is
        self.volume_threshold = volume_threshold  # retrain.volume_threshold
        self.clock = clock
        self._lock = threading.Lock()
        self._state = RetrainState.IDLE
        self._settling: Settling | None = None
        self._due: Decision | None = None
        self._last_outcome = ""
        # cool-down and rate limit
        self._streak: dict[str, int] = {}
        self._history: deque[float] = deque()
        self._last_retrain: float | None = None
        # the latest inputs
        self._new_labelled = 0
        self._scored = 0
        self._after_drift = 0
        self._signals: tuple[Signal, ...] = ()
        self._head_seq = 0
        self._schedule = ""

    @classmethod
    def from_config(cls, retrain: RetrainConfig, clock: Clock = time.monotonic) -> DecisionPolicy:
        return cls(retrain.policy, retrain.volume_threshold, clock)

    def retune(self, retrain: RetrainConfig) -> None:
        """New limits from a config reload; the state and the history (cool-down, rate limit) are kept."""
        with self._lock:
            self.config, self.volume_threshold = retrain.policy, retrain.volume_threshold

    # -- what can be read ----------------------------------------------------------------------
    @property
    def state(self) -> RetrainState:
        return self._state

    @property
    def settling(self) -> Settling | None:
        """The drift retrain waiting for data (state ``settling``), else None."""
        return self._settling

    @property
    def due(self) -> Decision | None:
        """The retrain that should start now (state ``due``), else None."""
        return self._due

    @property
    def last_outcome(self) -> str:
        """How the last retrain ended (its status, as given to ``finished``); "" before the first."""
        return self._last_outcome

    def blocked(self) -> str:
        """Why the cool-down or the rate limit forbids a retrain now ("" when neither does).

        Automatic triggers and manual requests without ``force`` both obey it.
        """
        with self._lock:
            return self._blocked(self.clock())

    # -- inputs --------------------------------------------------------------------------------
    def observe_volume(self, new_labelled: int, scored: int, after_drift: int | None = None) -> None:
        """Labelled events since the last retrain (the volume trigger), events the champion has scored
        (the warm-up), and labelled events after the settling drift's ``since_seq`` (while settling)."""
        with self._lock:
            self._new_labelled, self._scored, self._after_drift = new_labelled, scored, after_drift or 0

    def observe_drift(self, signals: Sequence[Signal], head_seq: int) -> None:
        """The detectors' (latched) signals and the buffer's newest label position (where a settling drift starts)."""
        with self._lock:
            self._signals, self._head_seq = tuple(signals), head_seq

    def observe_schedule(self, reason: str) -> None:
        """A scheduled retrain is due (the cron fired); the next tick weighs it once."""
        with self._lock:
            self._schedule = reason

    # -- transitions ---------------------------------------------------------------------------
    def request(self, reason: str, mode: str | None = None, force: bool = False, held: str = "") -> RequestAnswer:
        """A manual retrain (→ due), unless one runs, or ``held`` (an operator's pause), the cool-down or
        the rate limit forbid it and it is not forced. A due automatic retrain becomes this one."""
        with self._lock:
            if self._state is RetrainState.RUNNING:
                return RequestAnswer(False, running=True)
            blocked = held or self._blocked(self.clock())
            if blocked and not force:
                return RequestAnswer(False, blocked=blocked)
            recent_since = self._settling.since_seq if self._settling else self._due.recent_since if self._due else None
            self._become_due(Decision(True, "manual", f"{reason} (forced past: {blocked})" if blocked else reason,
                                      recent_since=recent_since, mode=mode))
            return RequestAnswer(True, blocked=blocked)

    def tick(self) -> Decision:
        """Weigh the latest inputs; the answer says whether a retrain is due (then call ``started``)."""
        with self._lock:
            if self._state is RetrainState.RUNNING:
                return Decision(False)
            now = self.clock()
            schedule, self._schedule = self._schedule, ""
            names = tuple(s.name for s in self._signals)
            fired = [s for s in self._signals if s.fired]
            for signal in fired:
                self._streak[signal.name] = self._streak.get(signal.name, 0) + 1
            for name in list(self._streak):
                if name not in {s.name for s in fired}:
                    self._streak[name] = 0  # hysteresis: the streak must be consecutive
            if self._due is not None:  # a manual request since the last tick
                return replace(self._due, consumed=names)

            candidates: list[tuple[str, str]] = []
            persistent = [s for s in fired if self._streak.get(s.name, 0) >= self.config.hysteresis]
            if persistent:
                candidates.append(("drift", "; ".join(s.reason for s in persistent)))
            if self._new_labelled >= self.volume_threshold:
                candidates.append(("volume", f"{self._new_labelled} new labelled events >= {self.volume_threshold}"))
            if schedule:
                candidates.append(("schedule", schedule))
            decision, settling_before = Decision(False), self._settling
            if candidates:
                trigger, reason = candidates[0]
                blocked = self._blocked(now)
                if self._scored < self.config.warmup_events:
                    decision = Decision(False, trigger, reason, f"warm-up: {self._scored}/{self.config.warmup_events} events seen")
                elif blocked:
                    decision = Decision(False, trigger, reason, blocked)
                elif trigger == "drift" and self.config.drift_settle_events:
                    # acted on: the evidence now lives in the settling record (a second detection joins it)
                    decision = Decision(False, consumed=names)
                    if self._settling is None:
                        self._settling = Settling(self._head_seq, reason)
                        self._state = RetrainState.SETTLING
                else:
                    decision = Decision(True, trigger, reason)
            if not decision.retrain and settling_before is not None and self._after_drift >= self.config.drift_settle_events:
                decision = Decision(True, "drift", f"{settling_before.reason} (then {self._after_drift} labelled events collected)")
            if decision.retrain:
                recent_since = self._settling.since_seq if self._settling else None
                return self._become_due(replace(decision, recent_since=recent_since, consumed=names))
            return decision

    def started(self) -> Decision:
        """The due retrain starts (due → running): the cool-down begins, it counts toward the rate
        limit, the drift streaks start again. Returns the retrain to run."""
        with self._lock:
            due = self._due
            if self._state is not RetrainState.DUE or due is None:
                raise TransitionError(f"started() in state {self._state.value}: nothing is due")
            now = self.clock()
            self._last_retrain = now
            self._history.append(now)
            self._streak.clear()
            self._due, self._settling, self._state = None, None, RetrainState.RUNNING
            return due

    def finished(self, outcome: str) -> None:
        """The running retrain ended (running → idle); ``outcome`` is its status (promoted, rejected,
        skipped, failed). The cool-down counts from its start, whatever the outcome."""
        with self._lock:
            if self._state is not RetrainState.RUNNING:
                raise TransitionError(f"finished() in state {self._state.value}: no retrain runs")
            self._last_outcome, self._state = outcome, RetrainState.IDLE

    # -- internals (called with the lock held) -------------------------------------------------
    def _become_due(self, decision: Decision) -> Decision:
        self._due, self._settling, self._state = decision, None, RetrainState.DUE
        return decision

    def _blocked(self, now: float) -> str:
        while self._history and now - self._history[0] > self.config.window_s:
            self._history.popleft()
        if self._last_retrain is not None and now - self._last_retrain < self.config.cooldown_s:
            return f"cool-down: {now - self._last_retrain:.0f}s since the last retrain < {self.config.cooldown_s:.0f}s"
        if len(self._history) >= self.config.max_retrains:
            return f"rate limit: {len(self._history)} retrains in the last {self.config.window_s:.0f}s"
        return ""
