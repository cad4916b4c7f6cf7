"""``sentiloop demo``: the whole continual-learning loop on one machine, in a few minutes.

The embedded broker and the daemon start in this process; a champion is trained on movie snippets
(fast profile) if the demo's data_dir has none; then a paced producer sends labelled feedback through
Kafka — movie snippets (the champion's own domain: nothing should fire), then tweets (a domain shift).
The terminal shows the stream live: events/s, dictionary size, drift statistics against their
thresholds, the drift trigger, the retrain's progress per member and the gate's decision with its
reasons. The producer waits while a retrain runs, so the run takes the same course on a slow machine.
At the end: accuracy per domain before/after on held-out sentences, a PNG plot, and how to look at
what the daemon leaves running (metrics, admin API, MLflow). Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentiloop.config import Settings
from sentiloop.consumers.broker import free_port
from sentiloop.datasets import Record
from sentiloop.files import atomic_write_bytes
from sentiloop.retrainers.results import RetrainStatus

log = logging.getLogger(__name__)

# Drift thresholds calibrated on the movies domain with `sentiloop.monitoring.drift.calibrate` (README).
MAX_BEHIND = 200  # events the drift scoring may lag behind the producer before the producer waits
CALIBRATED_DRIFT = {"ph_threshold": 31.0, "label_threshold": 0.088, "oov_margin": 0.033, "min_instances": 300}


@dataclass
class DemoPlan:
    champion: list[Record]
    stream: list[tuple[str, list[Record]]]  # (domain, records) in order
    held_out: dict[str, list[Record]]

    @property
    def total(self) -> int:
        return sum(len(records) for _, records in self.stream)


def make_plan(records: Sequence[Record], stable: int, shift: int, held_out: int) -> DemoPlan:
    from sentiloop.scenario import by_domain, shuffled

    domains = by_domain(records)
    movies, tweets = shuffled(domains["movies"], "demo"), shuffled(domains["tweets"], "demo")
    return DemoPlan(
        champion=movies[stable + held_out:],
        stream=[("movies", movies[:stable]), ("tweets", tweets[held_out:held_out + shift])],
        held_out={"movies": movies[stable:stable + held_out], "tweets": tweets[:held_out]},
    )


def demo_settings(data_dir: Path, members: Sequence[str], metrics_port: int) -> dict[str, Any]:
    """The demo daemon's config: embedded broker, drift-driven retrains, the fast profile's budget."""
    from sentiloop.scenario import profile_overrides

    tuned = profile_overrides({"enabled": list(members)}, "fast")
    return {
        "data_dir": str(data_dir),
        "kafka": {"bootstrap_servers": "embedded", "embedded_port": free_port(), "topic": "sentiloop.demo",
                  "group_id": "sentiloop-demo", "partitions": 1, "poll_timeout_ms": 200},
        "metrics": {"port": metrics_port},
        "models": tuned["models"],
        "retrain": {"volume_threshold": 10**9, "min_new_events": 200, "max_iterations": 2,
                    "drift": CALIBRATED_DRIFT,
                    "policy": {"warmup_events": 500, "cooldown_s": 0, "hysteresis": 1, "drift_settle_events": 600}},
        "dictionary": {"snapshot_every": 1000},
    }


@dataclass
class Timeline:
    """What the plot shows: samples along the stream and the moments that matter."""

    samples: list[dict[str, float]] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)


class Demo:
    def __init__(self, settings: Settings, config_path: Path, plan: DemoPlan, rate: float, interactive: bool) -> None:
        self.settings, self.config_path, self.plan = settings, config_path, plan
        self.rate, self.interactive = rate, interactive
        self.timeline = Timeline()
        self.produced = 0
        self.daemon: Any = None
        self._thread: threading.Thread | None = None
        self._seen_outcomes = 0
        self.event_prefix = next_run_prefix(settings.data_dir)
        self._seen_drift: dict[str, float] = {}
        self._pending_announced = False
        self._last_line = 0.0
        self._last_phase = ""

    # -- lifecycle -----------------------------------------------------------------------------
    def start_daemon(self) -> None:
        from sentiloop.daemon import Daemon

        self.daemon = Daemon(self.settings, self.config_path)
        self._thread = threading.Thread(target=self.daemon.run, name="sentiloop-daemon", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self.daemon.readiness()[0]:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not become ready; see the log above")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)

    # -- reading the daemon (in-process: its registry and components) ----------------------------
    def _metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels or None)
        return float(value) if value is not None else 0.0

    def _controller(self) -> Any:
        return self.daemon.controller

    # -- the stream ----------------------------------------------------------------------------
    def run_stream(self) -> None:
        from tqdm import tqdm

        from sentiloop.consumers.clients import make_producer
        from sentiloop.scenario import feedback_event

        bootstrap = [self.daemon.broker.bootstrap]
        producer = make_producer(self.settings.kafka, bootstrap, linger_ms=5)
        names = self.settings.label_names
        try:
            with tqdm(total=self.plan.total, unit="ev", desc="feedback", disable=not self.interactive, dynamic_ncols=True) as bar:
                for domain, records in self.plan.stream:
                    self.timeline.marks.append((self.produced, f"{domain} begins"))
                    self.say(f"streaming {len(records)} labelled {domain} sentences at {self.rate:g} events/s")
                    started = time.monotonic()
                    for i, record in enumerate(records):
                        delay = started + i / self.rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        producer.send(self.settings.kafka.topic, json.dumps(feedback_event(record, names, self.event_prefix)).encode())
                        self.produced += 1
                        bar.update(1)
                        if i % 50 == 0:
                            producer.flush()
                            self.observe(bar)
                            if self._controller().worker is not None or self._behind() > MAX_BEHIND:
                                self.catch_up(bar)
                                started = time.monotonic() - (i + 1) / self.rate
                producer.flush()
        finally:
            producer.close()
        self.settle()

    def _behind(self) -> float:
        """Events sent but not yet scored by the drift monitor."""
        return self.produced - self._metric("sentiloop_drift_scored_events_total")

    def catch_up(self, bar: Any) -> None:
        """Hold the stream while a retrain runs (showing its progress per member) or while the daemon's
        drift scoring is behind, so detections happen at the same stream positions on a slow machine."""
        if self._controller().worker is not None:
            self.say("the producer waits while the retrain runs (so the run is the same on a slow machine)")
        while self._controller().worker is not None or self._behind() > MAX_BEHIND:
            self.observe(bar)
            time.sleep(0.3)
        self.observe(bar)

    def settle(self, timeout_s: float = 600) -> None:
        """After the stream: wait until every event is stored and a running retrain is judged."""
        deadline = time.monotonic() + timeout_s
        idle_at: int | None = None  # the controller's tick count when all was stored and no worker ran
        self.say("stream sent; waiting for the daemon to store the last events (and for a running retrain)")
        while time.monotonic() < deadline:
            controller = self._controller()
            if controller.worker is None and self._metric("sentiloop_events_stored_total") >= self.plan.total:
                # done once a whole controller tick has seen every event and started no retrain
                idle_at = controller.ticks if idle_at is None else idle_at
                if controller.ticks >= idle_at + 2:
                    break
            else:
                idle_at = None
            self.observe(None)
            time.sleep(0.5)
        self.observe(None)
        pending = self._controller().pending_drift
        if pending is not None:
            self.say(f"a drift retrain is still pending ({pending[1][:120]}); it would start after "
                     f"{self.settings.retrain.policy.drift_settle_events} labelled events more than the demo sends")

    # -- what the terminal shows ---------------------------------------------------------------
    def observe(self, bar: Any) -> None:
        m = self._metric
        drift = self.settings.retrain.drift
        stats = {s: m("sentiloop_drift_statistic", signal=s) for s in ("page_hinkley", "label_shift", "oov_rate", "error_rate")}
        scored = m("sentiloop_drift_scored_events_total")
        accuracy = m("sentiloop_model_accuracy", member="ensemble", split="stream") if scored else float("nan")
        self.timeline.samples.append({"events": self.produced, "accuracy": accuracy, **stats,
                                      "champion": m("sentiloop_champion_version")})
        controller = self._controller()
        for signal in ("error_rate", "label_shift", "oov_rate"):
            fired = m("sentiloop_drift_detected_total", signal=signal)
            if fired > self._seen_drift.get(signal, 0.0):
                self._seen_drift[signal] = fired
                self.timeline.marks.append((self.produced, "drift"))
                self.say(f"DRIFT: signal {signal} fired after {self.produced} events sent")
        if controller.pending_drift is not None and not self._pending_announced:
            self.say(f"drift retrain scheduled: the daemon first collects {self.settings.retrain.policy.drift_settle_events} "
                     "labelled events from the new regime to learn from and to be judged on")
        self._pending_announced = controller.pending_drift is not None
        if controller.worker is not None:
            progress = (controller.status().get("running") or {}).get("progress") or {}
            phase = "starting the worker process" if not progress.get("iteration") else (
                f"iteration {progress['iteration']}/{progress.get('max_iterations', '?')}: "
                + (f"retraining {progress['member']}" if progress.get("member") else str(progress.get("phase", ""))))
            done = ", ".join(f"{k} {v:.0f}s" for k, v in (progress.get("members_done") or {}).items())
            if phase != self._last_phase:
                self.say(f"retrain: {phase}" + (f" (done: {done})" if done else ""))
                self._last_phase = phase
        for outcome in controller.outcomes[self._seen_outcomes:]:
            self._seen_outcomes += 1
            self.timeline.marks.append((self.produced, outcome.status.value))
            gate = outcome.gate_metrics
            detail = (f"recent holdout {gate.of('champion', 'recent'):.3f} → {gate.of('challenger', 'recent'):.3f}, "
                      f"golden {gate.of('champion', 'golden'):.3f} → {gate.of('challenger', 'golden'):.3f}") if gate else ""
            if outcome.status is RetrainStatus.PROMOTED:
                self.say(f"GATE: PROMOTED v{outcome.version or 0:04d} ({detail}); now serving it")
            else:
                reasons = "; ".join(outcome.verdict_reasons)
                self.say(f"GATE: kept the champion ({outcome.status.value}): {reasons}" + (f" ({detail})" if detail else ""))
        line = (f"{self._metric('sentiloop_events_stored_total'):.0f} stored | dictionary {m('sentiloop_dictionary_words'):.0f} words | "
                f"drift PH {stats['page_hinkley']:.1f}/{drift.ph_threshold:g} label {stats['label_shift']:.3f}/{drift.label_threshold:g} "
                f"OOV {stats['oov_rate']:.3f} | stream acc {accuracy:.3f} | champion v{m('sentiloop_champion_version'):.0f}")
        if bar is not None and self.interactive:
            bar.set_postfix_str(line, refresh=False)
        elif time.monotonic() - self._last_line > 5:
            self.say(line)
            self._last_line = time.monotonic()

    def say(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {message}")


def evaluate_versions(settings: Settings, versions: Sequence[int], held_out: dict[str, list[Record]]) -> dict[int, dict[str, float]]:
    from sentiloop.models.ensemble import Ensemble
    from sentiloop.models.store import ModelStore

    store = ModelStore(settings.data_dir)
    table: dict[int, dict[str, float]] = {}
    for version in versions:
        ensemble = Ensemble.load(store.path(version), only=settings.models.enabled)
        table[version] = {}
        for domain, records in held_out.items():
            predicted = ensemble.predict_proba([r.text for r in records]).argmax(axis=1)
            table[version][domain] = float(sum(int(p == r.label) for p, r in zip(predicted, records)) / len(records))
    return table


def plot(timeline: Timeline, settings: Settings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = timeline.samples
    if not samples:
        return
    x = [s["events"] for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(x, [s["accuracy"] for s in samples], label="champion accuracy (last 500 labelled events)")
    top.set_ylabel("accuracy")
    drift = settings.retrain.drift
    bottom.plot(x, [s["label_shift"] for s in samples], label="label shift (JS distance)")
    bottom.axhline(drift.label_threshold, linestyle=":", color="C0")
    bottom.plot(x, [s["page_hinkley"] / max(drift.ph_threshold, 1e-9) * drift.label_threshold for s in samples],
                label=f"Page-Hinkley (scaled: threshold = {drift.ph_threshold:g})")
    bottom.set_ylabel("drift statistic")
    bottom.set_xlabel("feedback events sent")
    for position, what in timeline.marks:
        for axis in (top, bottom):
            axis.axvline(position, color="grey" if "begins" in what else "red" if what == "drift" else "green", alpha=0.5, linewidth=1)
        top.annotate(what, (position, top.get_ylim()[1]), fontsize=7, rotation=90, va="top")
    top.legend(loc="lower left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    figure.suptitle("sentiloop demo: movies, then tweets")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def next_run_prefix(data_dir: Path) -> str:
    """Event ids of this run: the first run's are fixed ("demo-…", so a fresh clone's demo is the same
    every time); a later run in the same data_dir gets its own, or it would send only duplicates
    (stored once, changing nothing) and wait for them forever."""
    counter = data_dir / "demo-runs"
    runs = int(counter.read_text(encoding="utf-8").strip() or 0) if counter.exists() else 0
    atomic_write_bytes(counter, f"{runs + 1}\n".encode())
    return "demo-" if runs == 0 else f"demo-run{runs + 1}-"


def run_demo(data_dir: Path, dataset_dir: Path, *, members: Sequence[str], rate: float, stable: int, shift: int,
             held_out: int, interactive: bool, keep_running: bool, metrics_port: int) -> int:
    from sentiloop.config import load_settings
    from sentiloop.datasets import fetch_vader_ground_truth, load_vader_ground_truth
    from sentiloop.models.store import ModelStore
    from sentiloop.scenario import bootstrap_champion

    fetch_vader_ground_truth(dataset_dir)  # cached by the install step; a no-op then
    plan = make_plan(load_vader_ground_truth(dataset_dir, fetch=False), stable, shift, held_out)
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "demo-config.yaml"
    config_path.write_text(yaml.safe_dump(demo_settings(data_dir, members, metrics_port), sort_keys=False), encoding="utf-8")
    settings = load_settings(config_path)
    store = ModelStore(data_dir)
    if store.champion() is None:
        print(f"training the demo champion on {len(plan.champion)} movie snippets (fast profile, {', '.join(members)}) …", flush=True)
        version, seconds = bootstrap_champion(settings, plan.champion, "fast", data_dir / "movies.jsonl")
        print(f"champion v{version:04d} trained in {seconds:.0f}s", flush=True)
    before = store.champion()
    assert before is not None
    demo = Demo(settings, config_path, plan, rate, interactive)
    started = time.monotonic()
    try:
        demo.start_daemon()
        demo.run_stream()
        after = store.champion()
        assert after is not None
        table = evaluate_versions(settings, sorted({before, after}), plan.held_out)
        print_report(table, before, after, plan)
        picture = data_dir / "demo.png"
        plot(demo.timeline, settings, picture)
        print(f"\nplot: {picture}   (the whole run took {time.monotonic() - started:.0f}s after training)")
        print_how_to_look(settings, demo, config_path)
        if keep_running:
            print("\nThe daemon keeps running so you can look around; Ctrl-C stops it.", flush=True)
            while demo._thread is not None and demo._thread.is_alive():
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
        return 130
    finally:
        demo.stop()
    return 0


def print_report(table: dict[int, dict[str, float]], before: int, after: int, plan: DemoPlan) -> None:
    domains = list(plan.held_out)
    print("\naccuracy on held-out sentences (never streamed, never trained on)")
    print(f"{'domain':<10}{'n':>6}{f'v{before:04d} (before)':>18}{f'v{after:04d} (after)':>18}{'change':>10}")
    for domain in domains:
        a, b = table[before][domain], table[after][domain]
        print(f"{domain:<10}{len(plan.held_out[domain]):>6}{a:>18.3f}{b:>18.3f}{(b - a) * 100:>+9.1f}pt")
    if before == after:
        print("(no challenger was promoted in this run: the champion is unchanged)")


def print_how_to_look(settings: Settings, demo: Demo, config_path: Path) -> None:
    from sentiloop.daemon.auth import token_path

    url = demo.daemon.admin_url or "http://127.0.0.1:9108"
    print("\nhow to look:")
    print(f"  curl -s {url}/metrics | grep ^sentiloop_")
    print(f"  curl -s -H \"Authorization: Bearer $(cat {token_path(settings)})\" {url}/v1/status")
    print(f"  curl -s -H \"Authorization: Bearer $(cat {token_path(settings)})\" -d '{{\"text\": \"what a lovely day\"}}' "
          f"-H 'Content-Type: application/json' {url}/v1/predict")
    print(f"  sentiloop status --config {config_path}")
    print(f"  mlflow ui --backend-store-uri sqlite:///{(settings.data_dir / 'mlflow' / 'mlflow.db').resolve()}")
