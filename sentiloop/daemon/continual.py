"""The retrain controller: decides when to retrain, runs one worker process at a time, hot-swaps.

Nothing here runs on the poll loop. Every ``CHECK_S`` the controller thread gathers the triggers —
volume (new labelled events since the last retrain), drift (latched signals from the DriftMonitor),
schedule (APScheduler cron job) and manual (``POST /v1/retrain``) — and feeds them to the DecisionPolicy,
the state machine that decides (idle → settling → due → running; see ``sentiloop.retrainers.policy``).
A drift retrain first waits for ``retrain.policy.drift_settle_events`` labelled events after the detection, so
it has data from the new regime to train on, and its gate judges on the holdout after the detection.
When the policy says a retrain is due the controller starts it, and tells the policy when it ends. A retrain
runs as a separate process (``sentiloop retrain --json``), so the consumer never waits on it, its
memory is returned when it ends, and killing it leaves the daemon and the champion untouched (the
failure is counted and its run record is closed). When a run promotes, or when an operator runs
``sentiloop promote``/``rollback``, the new champion is loaded here and swapped in atomically.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from sentiloop.buffer.store import BufferStore
from sentiloop.config import Settings, secret_env, settings_without_secrets
from sentiloop.daemon.leadership import Leadership, replica_name
from sentiloop.daemon.serving import Serving
from sentiloop.errors import StorageUnavailable
from sentiloop.files import atomic_write_bytes
from sentiloop.models.store import ModelStore
from sentiloop.monitoring.drift import DriftReference, Signal
from sentiloop.monitoring.metrics import IngestMetrics
from sentiloop.retrainers.data import RETRAIN_MARK, golden_pool, original_split
from sentiloop.retrainers.policy import Clock, Decision, DecisionPolicy, RetrainState
from sentiloop.retrainers.progress import read_progress
from sentiloop.retrainers.results import GOLDEN, RECENT, RetrainStatus, RetrainSummary
from sentiloop.runtime import worker_environment

if TYPE_CHECKING:
    from sentiloop.monitoring.shadow import ShadowReport

log = logging.getLogger(__name__)
CHECK_S = 2.0
WORKER_NICENESS = 10


def drift_reference(settings: Settings, info: dict[str, Any]) -> DriftReference:
    """Drift baselines from the champion's own dataset.

    OOV texts are its validation split (words it may not have seen, as in production); the label
    reference is train + validation, the class mix it learnt, from enough labels that the reference's
    own sampling noise does not look like drift; the golden set (validation less the vote fold, as
    the gate uses it) calibrates the label-free estimate. The lineage names the dataset, so a champion
    bootstrapped on a user's file is compared with that file. Nothing is downloaded.
    """
    original = original_split(settings, info)
    if original is None:  # logged by original_split; the first window of the stream becomes the reference
        return DriftReference()
    train, validation = original
    golden = golden_pool(validation, info)
    return DriftReference(validation.texts, [*train.labels.tolist(), *validation.labels.tolist()], golden.texts,
                          golden.labels.tolist())


class DriftSignals(Protocol):
    """What the controller needs of the drift monitor (``DriftMonitor`` is one)."""

    @property
    def scored(self) -> int: ...

    def signals(self) -> list[Signal]: ...

    def reset(self, names: Sequence[str] | None = None) -> None: ...

    def swap(self, champion: Any, version: int | None, reference: DriftReference | None = None) -> None: ...

    def start_shadow(self, challenger: Any, version: int, reference: DriftReference, events: int, min_labels: int) -> None: ...

    def shadow_done(self) -> bool: ...

    def end_shadow(self) -> ShadowReport | None: ...


class WorkerProcess(Protocol):
    """What the controller needs of a worker process (``subprocess.Popen`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...


Spawn = Callable[[list[str], Path, Path, dict[str, str]], WorkerProcess]
"""Start a worker: (command, file for its stdout, file its stderr is appended to, environment)."""


def spawn_worker(command: list[str], output: Path, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The worker process: its stdout (the JSON summary) to ``output``, its stderr appended to ``log_path``.

    The child gets its own copies of both descriptors; the daemon's are closed once it has started.
    """
    with open(output, "wb") as stdout, open(log_path, "ab") as stderr:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)


class Worker:
    """A running ``sentiloop retrain`` process and where its JSON summary goes."""

    def __init__(self, process: WorkerProcess, output: Path, trigger: str, started: float) -> None:
        self.process, self.output, self.trigger, self.started = process, output, trigger, started


class PendingShadow:
    """A challenger the gate accepted, scoring live traffic in shadow until the controller decides."""

    def __init__(self, summary: RetrainSummary, started: float) -> None:
        self.summary, self.started = summary, started


class RetrainController:
    def __init__(self, settings: Settings, store: BufferStore, metrics: IngestMetrics, monitor: DriftSignals,
                 announce: Any | None = None, serving: Serving | None = None, clock: Clock = time.monotonic,
                 spawn: Spawn = spawn_worker, policy: DecisionPolicy | None = None, models: ModelStore | None = None,
                 leadership: Leadership | None = None) -> None:
        """The daemon's root passes ``policy`` and ``models``; left out, they are built from ``settings``
        (``clock`` then drives the policy's cool-down and rate limit). ``spawn`` starts the worker process.
        ``leadership``: replicas sharing a buffer run retrains only on the leader (None: this one always
        leads); every replica serves the champion pointer of its data_dir (which ``RegistryFollower``
        moves on replicas that meet in the MLflow registry)."""
        self.settings = settings
        self.serving = serving
        self.paused = settings.pause.retraining
        self.store = store
        self.metrics = metrics
        self.monitor = monitor
        self.announce = announce
        self.policy = policy or DecisionPolicy.from_config(settings.retrain, clock)
        self.spawn = spawn
        self.models = models or ModelStore(settings.data_dir)
        self.leadership = leadership
        self.leading = leadership is None
        self.worker: Worker | None = None
        self.shadow: PendingShadow | None = None
        self.champion_version: int | None = None
        self.outcomes: list[RetrainSummary] = []
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentiloop-retrain", daemon=True)
        self._scheduler: Any | None = None
        self._last_suppressed = ""
        self.ticks = 0  # completed controller ticks: a caller that waits for two has seen one start after it looked

    @property
    def pending_drift(self) -> tuple[int, str] | None:
        """(buffer seq at detection, reason) of a settling drift retrain (the policy's ``settling`` state)."""
        settling = self.policy.settling
        return (settling.since_seq, settling.reason) if settling is not None else None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> RetrainController:
        self._check_leadership()
        self.refresh_champion()
        if self.settings.retrain.schedule_cron:
            self._start_scheduler(self.settings.retrain.schedule_cron)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self._thread.join(timeout=10)
        if self.worker is not None and self.worker.process.poll() is None:
            log.info("stopping the retrain worker (it will be discarded at the next start)")
            self.worker.process.terminate()
        if self.leadership is not None:
            self.leadership.release()

    def _start_scheduler(self, cron: str) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": self.settings.retrain.misfire_grace_s})
        scheduler.add_job(self._on_schedule, CronTrigger.from_crontab(cron), id="scheduled-retrain", replace_existing=True)
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduled retrains: %s", cron)

    def _on_schedule(self) -> None:
        self.policy.observe_schedule(f"schedule {self.settings.retrain.schedule_cron}")

    def request(self, reason: str, mode: str | None = None, force: bool = False) -> tuple[int, dict[str, Any]]:
        """A manual retrain request (``POST /v1/retrain``): answered at once, run by the controller thread.

        It obeys the policy's cool-down and rate limit and a retraining pause, unless ``force``; the
        answer says which. Returns (HTTP status, body).
        """
        if not self.leading:
            return 409, {"accepted": False, "why": f"replica {replica_name()} is not the retrain leader: send the request to the "
                         "replica whose /v1/status says \"leader\": true (sentiloop_retrain_leader 1)"}
        if self.champion_version is None and self.policy.state is not RetrainState.RUNNING:
            return 409, {"accepted": False, "why": "no champion ensemble yet: run `sentiloop train` first"}
        answer = self.policy.request(reason, mode, force, held="retraining is paused (POST /v1/resume)" if self.paused else "")
        if answer.running:
            worker = self.worker
            return 409, {"accepted": False, "why": f"a retrain is already running (pid {worker.process.pid if worker else '?'})"}
        if not answer.accepted:
            return 429, {"accepted": False, "why": answer.blocked, "hint": "send force: true to run it anyway"}
        return 202, {"accepted": True, "reason": reason, "forced": bool(answer.blocked),
                     "policy": f"overridden: {answer.blocked}" if answer.blocked else "allowed"}

    def apply(self, settings: Settings) -> None:
        """A reloaded config: policy limits, schedule, pause switch; the worker reads the rest at launch."""
        old = self.settings.retrain
        self.policy.retune(settings.retrain)
        if settings.pause.retraining != self.settings.pause.retraining:
            self.paused = settings.pause.retraining
        self.settings = settings
        if settings.retrain.schedule_cron != old.schedule_cron:
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)
                self._scheduler = None
            if settings.retrain.schedule_cron:
                self._start_scheduler(settings.retrain.schedule_cron)
            log.info("retrain schedule is now %s", settings.retrain.schedule_cron or "off")

    def status(self) -> dict[str, Any]:
        """The policy's state, triggers, the pending drift retrain, the running worker with its progress, recent outcomes."""
        r = self.settings.retrain
        worker = self.worker
        running = None
        if worker is not None:
            running = {"pid": worker.process.pid, "trigger": worker.trigger, "seconds": round(time.monotonic() - worker.started, 1),
                       "progress": read_progress(worker.output.with_suffix(".progress.json"))}
        job = self._scheduler.get_job("scheduled-retrain") if self._scheduler is not None else None
        pending = self.pending_drift
        return {
            "enabled": r.enabled,
            "paused": self.paused,
            "leader": self.leading,
            "replica": replica_name(),
            "state": self.policy.state.value,
            "triggers": {
                "volume": {"new_labelled_events": self.store.count_since(RETRAIN_MARK), "threshold": r.volume_threshold},
                "drift": [{"signal": s.name, "fired": s.fired, "statistic": s.statistic, "threshold": s.threshold, "reason": s.reason}
                          for s in self.monitor.signals()],
                "schedule": {"cron": r.schedule_cron, "next_run": job.next_run_time.isoformat() if job and job.next_run_time else None},
                "policy_blocked": self.policy.blocked(),
            },
            "pending_drift": {"since_seq": pending[0], "reason": pending[1],
                              "settle_events": r.policy.drift_settle_events} if pending else None,
            "running": running,
            "recent_outcomes": [{"status": o.status.value, "trigger": o.trigger, "version": o.version,
                                 "gate_reasons": list(o.gate_reasons), "seconds": o.seconds, "error": o.error}
                                for o in self.outcomes[-5:]],
        }

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        unavailable = ""
        while not self._stop.wait(CHECK_S):
            try:
                self.tick()
                self.ticks += 1
            except StorageUnavailable as exc:  # the consumer reports the outage; say it here once
                if str(exc) != unavailable:
                    log.warning("retrain decisions wait for the buffer: %s", exc)
                unavailable = str(exc)
                continue
            except Exception:  # the controller must outlive any single failure
                log.exception("retrain controller tick failed")
            unavailable = ""

    def _check_leadership(self) -> None:
        self.leading = self.leadership.leads() if self.leadership is not None else True
        self.metrics.retrain_leader.set(1 if self.leading else 0)

    def tick(self) -> None:
        """Read the inputs, feed the policy, start the retrain it says is due; tell it when a worker ends.

        On a replica that does not lead, only the champion is followed.
        """
        self._check_leadership()
        worker = self.worker
        if worker is not None:
            if worker.process.poll() is None:
                if not self.leading:  # another replica may lead now: two retrains must never run at once
                    log.error("lost the retrain leadership: stopping the running retrain (pid %d)", worker.process.pid)
                    worker.process.terminate()
                return
            seen = len(self.outcomes)
            try:
                self._finish(worker)
            finally:  # even if finishing failed: the process is gone, the policy goes back to idle
                self.worker = None
                self.policy.finished(self.outcomes[-1].status.value if len(self.outcomes) > seen else "failed")
                self.metrics.retrain_running.set(0)  # only now: "not running" means a request is weighed again
        if self.models.champion() != self.champion_version:
            self.refresh_champion()  # promote/rollback from the CLI, or the registry followed
        if not self.leading:
            return
        if self._shadow_goes_on():
            return  # no retrain starts while a challenger is in shadow
        if not self.settings.retrain.enabled or self.champion_version is None:
            return
        if self.paused and self.policy.state is not RetrainState.DUE:  # a (forced) manual request still runs
            return
        settling = self.policy.settling
        self.policy.observe_volume(self.store.count_since(RETRAIN_MARK), self.monitor.scored,
                                   self.store.count_after(settling.since_seq) if settling is not None else None)
        self.policy.observe_drift(self.monitor.signals(), self.store.label_position())
        decision = self.policy.tick()
        if decision.consumed:
            self.monitor.reset(list(decision.consumed))  # acted on: no stuck flag
        if decision.retrain:
            self._start()
        elif settling is None and (pending := self.policy.settling) is not None:
            log.info("drift retrain scheduled after %d more labelled events: %s", self.policy.config.drift_settle_events, pending.reason)
        elif decision.suppressed and decision.suppressed != self._last_suppressed:
            # The signal stays latched (the detector is not reset): a drift still there when the
            # cool-down ends starts its retrain then, instead of a blind window of fresh statistics.
            log.info("retrain (%s: %s) suppressed by %s", decision.trigger, decision.reason, decision.suppressed)
        self._last_suppressed = decision.suppressed
        self.metrics.retrain_pending.set(1 if self.policy.state is RetrainState.SETTLING else 0)

    def _start(self) -> None:
        """The due retrain: the policy marks it running (its cool-down starts) and the worker is launched.

        A worker that cannot be started is counted as failed; the policy goes back to idle.
        """
        decision: Decision = self.policy.started()
        try:
            self.launch(decision.trigger, decision.reason, decision.mode, decision.recent_since)
        except OSError as exc:  # e.g. the disk is full: counted and logged; the next trigger tries again
            self.metrics.retrain_runs.labels(trigger=decision.trigger, status="failed").inc()
            log.error("could not start the retrain worker (%s): %s", decision.reason, exc)
        finally:
            if self.worker is None:
                self.policy.finished("failed")

    # -- the worker ----------------------------------------------------------------------------
    def _effective_config(self) -> Path:
        """The worker reads exactly the daemon's settings (file + environment), written out once.

        Secrets are left out of the file (0600 all the same) and reach the worker by environment.
        """
        path = self.settings.data_dir / "retrain" / "effective-config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, yaml.safe_dump(settings_without_secrets(self.settings), sort_keys=False).encode("utf-8"))
        return path

    def launch(self, trigger: str, reason: str, mode: str | None = None, recent_since: int | None = None) -> Worker:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = self.settings.data_dir / "retrain" / f"worker-{stamp}.json"
        # niced: on a small machine the worker's training must not starve ingestion and serving
        nice = ["nice", "-n", str(WORKER_NICENESS)] if shutil.which("nice") else []
        command = [*nice, sys.executable, "-m", "sentiloop", "retrain", "--config", str(self._effective_config()),
                   "--trigger", trigger, "--reason", reason[:500], "--json", "--offline",
                   "--progress", str(output.with_suffix(".progress.json")), "--parent-pid", str(os.getpid())]
        if mode:
            command += ["--mode", mode]
        if recent_since is not None:
            command += ["--recent-since", str(recent_since)]
        env = {**worker_environment(), **secret_env(self.settings)}
        process = self.spawn(command, output, output.with_suffix(".log"), env)
        self.worker = Worker(process, output, trigger, time.monotonic())
        self.metrics.retrain_running.set(1)
        log.info("retrain started (pid %d, trigger %s): %s", process.pid, trigger, reason)
        return self.worker

    def _finish(self, worker: Worker) -> None:
        from sentiloop.retrainers.run import mark_interrupted

        code = worker.process.returncode
        if code == 0:
            summary = RetrainSummary.read(worker.output)  # unreadable output: a failed summary saying so
        else:
            summary = RetrainSummary.failed(f"worker exited with code {code}; see {worker.output.with_suffix('.log')}")
            mark_interrupted(self.settings, f"worker exited with code {code}")  # the next retrain resumes it; the champion is untouched
        summary = summary.model_copy(update={"trigger": worker.trigger, "exit_code": code,
                                             "seconds": round(time.monotonic() - worker.started, 1)})
        status = summary.status
        self.metrics.retrain_runs.labels(trigger=worker.trigger, status=status.value).inc()
        self.outcomes.append(summary)
        failed = status is RetrainStatus.FAILED
        log.log(logging.WARNING if failed else logging.INFO, "retrain finished: %s%s", status.value,
                f" ({summary.error})" if failed else "")
        self._record_metrics(summary)
        if status is RetrainStatus.PROMOTED:
            self.metrics.promotions.inc()
            self.refresh_champion(reason=f"promoted by retrain ({worker.trigger})", summary=summary)
        elif status is RetrainStatus.SHADOW:
            self._start_shadow(summary)

    # -- shadow evaluation ---------------------------------------------------------------------
    def _start_shadow(self, summary: RetrainSummary) -> None:
        from sentiloop.models.ensemble import Ensemble

        assert summary.version is not None
        challenger = Ensemble.load(self.models.path(summary.version), only=self.settings.models.enabled)
        shadow = self.settings.retrain.shadow
        self.monitor.start_shadow(challenger, summary.version, drift_reference(self.settings, challenger.info), shadow.events,
                                  shadow.min_labels)
        self.shadow = PendingShadow(summary, time.monotonic())

    def _shadow_goes_on(self) -> bool:
        """True while a shadow run goes on; when it is over (enough events, or max_wait_s), decide it."""
        pending = self.shadow
        if pending is None:
            return False
        config = self.settings.retrain.shadow
        timed_out = time.monotonic() - pending.started > config.max_wait_s
        if not self.monitor.shadow_done() and not timed_out:
            return True
        self.shadow = None
        report = self.monitor.end_shadow()
        version = pending.summary.version
        if report is None:
            reasons = ["shadow: the champion changed during the shadow run"]
        else:
            reasons = report.verdict(config.tolerance)
            if report.events < config.events:
                reasons.insert(0, f"shadow: only {report.events} of {config.events} live events within {config.max_wait_s:.0f}s")
        promoted = not reasons
        outcome = pending.summary.model_copy(update={
            "status": RetrainStatus.PROMOTED if promoted else RetrainStatus.REJECTED, "gate_reasons": tuple(reasons),
            "shadow": report.as_dict() if report is not None else None})
        self.outcomes.append(outcome)
        self.metrics.shadow_decisions.labels(result="promoted" if promoted else "refused").inc()
        if promoted and report is not None and version is not None:
            from sentiloop.models.champion import set_champion

            reason = (f"promoted after a shadow run: {report.events} live events, agreement {report.agreement:.3f}, estimated "
                      f"accuracy {report.estimated['challenger']:.3f} vs champion {report.estimated['champion']:.3f}")
            set_champion(self.settings, version, reason)
            self.metrics.promotions.inc()
            self.refresh_champion(reason=reason, summary=outcome)
            log.info("challenger v%s %s", version, reason)
        else:
            log.warning("challenger v%s refused after its shadow run: %s", version, "; ".join(reasons))
        return False

    def _record_metrics(self, summary: RetrainSummary) -> None:
        last = summary.last_iteration
        if last is None:
            return
        for member, seconds in last.durations.items():
            self.metrics.retrain_duration.labels(member=member).set(seconds)
        for member, splits in last.metrics.items():  # "ensemble" and each member
            for split in (GOLDEN, RECENT):
                if split in splits:
                    self.metrics.model_accuracy.labels(member=member, split=f"challenger_{split}").set(splits[split])
        self.metrics.refinement_rate.set(last.refinement.refinement_rate)
        self.metrics.data_quality.set(last.refinement.data_quality_score)
        for check in last.bias:
            self.metrics.bias_score.labels(check=check.name).set(check.bias_score)
            if check.flagged:
                self.metrics.bias_flagged.labels(check=check.name).inc()

    # -- hot swap ------------------------------------------------------------------------------
    def refresh_champion(self, reason: str = "", summary: RetrainSummary | None = None, reload: bool = False) -> None:
        """Load the champion named by the store and swap it into the monitor and serving (atomic for readers).

        ``reload``: load it again even if it is the one serving (the enabled members changed).
        """
        with self._swap_lock:  # the controller thread and an admin request may both ask
            self._refresh_champion(reason, summary, reload)

    def _refresh_champion(self, reason: str, summary: RetrainSummary | None, reload: bool) -> None:
        version = self.models.champion()
        if version is None:
            log.info("no champion ensemble yet: drift monitoring and retrains start after `sentiloop train`")
            return
        if version == self.champion_version and not reload:
            return
        from sentiloop.models.ensemble import Ensemble

        ensemble = Ensemble.load(self.models.path(version), only=self.settings.models.enabled)
        self.monitor.swap(ensemble, version, drift_reference(self.settings, ensemble.info))
        if self.serving is not None:
            self.serving.swap(ensemble, version)
        previous, self.champion_version = self.champion_version, version
        registered = self.models.registered_version(version)
        self.metrics.champion_version.set(version)
        self.metrics.champion_registry_version.set(registered or 0)
        for member, weight in ensemble.weights.items():
            self.metrics.ensemble_weight.labels(member=member).set(weight)
        if previous is not None and self.announce is not None and self.leading:  # followers do not echo it
            self.announce({"event": "champion_changed", "version": version, "previous": previous, "registry_version": registered,
                           "reason": reason or "champion pointer changed (promote/rollback)",
                           "metrics": summary.gate_metrics.model_dump(mode="json") if summary and summary.gate_metrics else {},
                           "ts_ms": int(time.time() * 1000)})
