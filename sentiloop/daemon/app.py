"""The composition root (cf. Quix Streams' ``Application``): build, wire, run and stop every part.

Start order: embedded broker (if configured) → buffer + dictionary → drift monitor, serving and
retrain controller → HTTP servers (probes + metrics, admin API) → config watcher → consumer loop.
Stop order is the reverse, and a SIGTERM lets the current batch finish and commit.
A reload (SIGHUP, ``POST /v1/reload``, the config file changing on disk) builds a new frozen Settings,
swaps it in whole and gives each component its section; a bad file is refused and the old stays.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sentiloop.buffer import open_buffer
from sentiloop.buffer.store import BatchResult, BufferStore
from sentiloop.config import KafkaConfig, Settings, load_settings, secret_env
from sentiloop.consumers.broker import EmbeddedBroker
from sentiloop.consumers.clients import KafkaClients
from sentiloop.consumers.loop import FeedbackConsumer
from sentiloop.daemon.housekeeping import RetentionSweep, SnapshotCadence
from sentiloop.daemon.leadership import leadership_for
from sentiloop.daemon.serving import Serving
from sentiloop.errors import ConfigError
from sentiloop.logs import configure_logging
from sentiloop.models.lexicon import load_seed_lexicon
from sentiloop.models.snapshots import DictionarySnapshots
from sentiloop.models.store import ModelStore
from sentiloop.models.word_sentiment import WordSentimentModel
from sentiloop.monitoring.metrics import IngestMetrics
from sentiloop.runtime import prepare_daemon_environment

if TYPE_CHECKING:
    from sentiloop.models.follow import RegistryFollower

log = logging.getLogger(__name__)

STALL_AFTER_S = 60.0


def missing_codecs() -> list[str]:
    """Compression codecs kafka-python cannot decode in this environment (it needs extra libraries)."""
    from kafka import codec

    checks = {"snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd, "gzip": codec.has_gzip}
    return [name for name, available in checks.items() if not available()]


def build_dictionary(settings: Settings) -> WordSentimentModel:
    d = settings.dictionary
    return WordSentimentModel(settings.polarities, d.alpha, d.min_count, d.tokenizer, d.temperature)


def open_store(settings: Settings, dictionary: WordSentimentModel | None) -> BufferStore:
    """The buffer under ``data_dir``, with the dictionary loaded (and seeded once, if configured)."""
    store = open_buffer(settings, dictionary)
    if dictionary is not None and settings.dictionary.seed_lexicon != "none":
        added = store.seed_dictionary(load_seed_lexicon(settings.dictionary.seed_lexicon, settings.polarities), settings.dictionary.seed_lexicon)
        if added:
            log.info("seeded the dictionary with %d words from %s", added, settings.dictionary.seed_lexicon)
    return store


class Announcer:
    """Publishes champion changes on ``<topic>.models`` (JSON: version, previous, reason, metrics)."""

    def __init__(self, settings: Settings, clients: KafkaClients) -> None:
        self.settings, self.clients = settings, clients
        self._producer: Any = None

    def __call__(self, message: dict[str, Any]) -> None:
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                self._producer = self.clients.producer()
            self._producer.send(self.settings.kafka.models_topic, json.dumps(message).encode()).get(timeout=30)
            log.info("announced champion v%s on %s", message.get("version"), self.settings.kafka.models_topic)
        except KafkaError as exc:
            log.error("could not announce the new champion on %s: %s", self.settings.kafka.models_topic, exc)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


class Daemon:
    """A running sentiloop: ``run()`` blocks until SIGTERM/SIGINT (or ``stop()``)."""

    def __init__(self, settings: Settings, config_path: Path | None = None,
                 kafka_clients: Callable[[KafkaConfig, list[str]], KafkaClients] = KafkaClients) -> None:
        self.settings = settings
        self.config_path = config_path
        self.kafka_clients = kafka_clients  # the transport seam: tests pass a factory of failing or recording clients
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.broker: EmbeddedBroker | None = None
        self.store: BufferStore | None = None
        self.servers: list[Any] = []
        self.admin_url: str | None = None
        self.serving = Serving()
        self.watcher: Any = None
        self._reload_lock = threading.Lock()
        self._missing_codecs: list[str] = []
        self.consumer: FeedbackConsumer | None = None
        self.monitor: Any = None
        self.controller: Any = None
        self.announcer: Announcer | None = None
        self.follower: RegistryFollower | None = None
        self.metrics = IngestMetrics()
        self.snapshot_cadence: SnapshotCadence | None = None
        self.retention: RetentionSweep | None = None
        self._buffer_count = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        prepare_daemon_environment()
        self._install_signal_handlers()
        try:
            self._missing_codecs = missing_codecs()
            if self._missing_codecs:
                log.error("Kafka compression codecs %s cannot be decoded here (install python-snappy, lz4, zstandard): "
                          "a batch compressed with them would stop its partition", ", ".join(self._missing_codecs))
            self.metrics.seconds_since_poll.set_function(self.seconds_since_poll)
            bootstrap = self._start_broker()
            dictionary = build_dictionary(settings)
            self.store = open_store(settings, dictionary)
            snapshots = DictionarySnapshots(settings.data_dir / "dictionary", settings.dictionary.keep_snapshots)
            self.snapshot_cadence = SnapshotCadence(self.store, snapshots, settings.dictionary, settings.buffer, self.metrics)
            self.retention = RetentionSweep(self.store, settings.buffer)
            self._buffer_count = self.store.stats().events_stored
            self.metrics.buffer_events.set(self._buffer_count)
            self.metrics.dictionary_words.set(len(dictionary.words))
            clients = self.kafka_clients(settings.kafka, bootstrap)
            self.consumer = FeedbackConsumer(settings, bootstrap, self.store, self.metrics, on_batch=self._after_batch, clients=clients)
            self._start_continual_learning(clients)
            self._start_servers()
            if self.config_path is not None:
                from sentiloop.daemon.reload import ConfigWatcher

                self.watcher = ConfigWatcher(self.config_path, self.reload_config).start()
            print(f"sentiloop: consuming {settings.kafka.topic} from {','.join(bootstrap)}; buffer {settings.buffer_location}", flush=True)
            for server in self.servers:
                print(f"sentiloop: {server.name} on {server.url}", flush=True)
            self.consumer.run(self.stop_event)
        finally:
            self._shutdown()
        return 0

    def _start_servers(self) -> None:
        """Probes + /metrics on metrics.port; /v1/* there too, or on its own server when admin.port is set."""
        from sentiloop.daemon.api import build_app
        from sentiloop.daemon.auth import daemon_token
        from sentiloop.daemon.client import write_runtime
        from sentiloop.daemon.operations import DaemonOperations
        from sentiloop.daemon.server import HttpServer

        settings, ops = self.settings, DaemonOperations(self)
        m, a = settings.metrics, settings.admin
        token = daemon_token(settings) if a.enabled else None
        limits = {"max_body": a.max_body_bytes, "max_texts": a.max_predict_texts}
        shared = a.enabled and a.port is None
        if m.enabled:
            name = "metrics, probes and admin API" if shared else "metrics and probes"
            app = build_app(ops, self.metrics.registry, token if shared else None, **limits)
            self.servers.append(HttpServer(app, m.host, m.port, name).start())
            if shared:
                self.admin_url = self.servers[-1].url
        if a.enabled and not shared:
            assert a.port is not None
            self.servers.append(HttpServer(build_app(ops, self.metrics.registry, token, **limits), a.host, a.port, "admin API").start())
            self.admin_url = self.servers[-1].url
        metrics_url = self.servers[0].url if m.enabled and self.servers else None
        write_runtime(settings, self.admin_url, metrics_url)

    def stop(self) -> None:
        self.stop_event.set()

    def _start_broker(self) -> list[str]:
        kafka = self.settings.kafka
        if kafka.bootstrap_servers == "embedded":
            self.broker = EmbeddedBroker("127.0.0.1", kafka.embedded_port, self.settings.data_dir / "broker.log")
            self.broker.start()
            print(f"sentiloop: started the embedded in-memory broker on {self.broker.bootstrap} (development only)", flush=True)
        return kafka.bootstrap()

    def _start_continual_learning(self, clients: KafkaClients) -> None:
        """Drift monitor + retrain controller (both off the poll loop); idle until a champion exists."""
        from sentiloop.daemon.continual import RetrainController
        from sentiloop.models.scores import ScoreStore
        from sentiloop.monitoring.drift_monitor import DriftMonitor
        from sentiloop.retrainers.policy import DecisionPolicy

        assert self.store is not None
        self.monitor = DriftMonitor(self.settings.retrain.drift, len(self.settings.labels), self.metrics,
                                    scores=ScoreStore.for_settings(self.settings)).start()
        self.announcer = Announcer(self.settings, clients)
        models = ModelStore(self.settings.data_dir)
        self.controller = RetrainController(self.settings, self.store, self.metrics, self.monitor,
                                            announce=self.announcer, serving=self.serving,
                                            policy=DecisionPolicy.from_config(self.settings.retrain), models=models,
                                            leadership=leadership_for(self.settings)).start()
        self.follower = self._follower(models)

    def _follower(self, models: ModelStore) -> RegistryFollower | None:
        """Replicas on a PostgreSQL buffer have data_dirs of their own: they meet in the MLflow registry."""
        settings = self.settings
        if settings.buffer.url is None or not settings.mlflow.enabled:
            return None
        from sentiloop.models.follow import RegistryFollower

        if settings.mlflow.tracking_uri is None:
            log.warning("buffer.url is shared but mlflow.tracking_uri is not: replicas on other hosts cannot see this one's "
                        "champions; set mlflow.tracking_uri to a tracking server they all reach")
        controller = self.controller
        return RegistryFollower(settings, models, settings.mlflow.follow_interval_s,
                                busy=lambda: controller is not None and controller.worker is not None).start()

    def _shutdown(self) -> None:
        from sentiloop.daemon.client import remove_runtime

        if self.watcher is not None:
            self.watcher.stop()
        if self.follower is not None:
            self.follower.stop()
        if self.controller is not None:
            self.controller.stop()
        if self.announcer is not None:
            self.announcer.close()  # before the broker goes, or its client logs connection errors
        if self.monitor is not None:
            self.monitor.stop()
            if self.monitor.scores is not None:
                self.monitor.scores.close()
        if self.snapshot_cadence is not None:
            self.snapshot_cadence.flush()
        if self.store is not None:
            self.store.close()
        for server in reversed(self.servers):
            server.stop()
        remove_runtime(self.settings)
        if self.broker is not None:
            self.broker.stop()
        log.info("sentiloop stopped")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the current batch, committing, closing", signal.Signals(signum).name)
            self.stop_event.set()

        def request_reload(_signum: int, _frame: FrameType | None) -> None:
            if self.watcher is not None:
                self.watcher.request()  # done on the watcher's thread, not in the poll loop's signal handler
            else:
                log.warning("SIGHUP ignored: the daemon was started without --config")

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)

    # -- per batch housekeeping (cheap: runs on the poll thread) ---------------------------------
    def _after_batch(self, result: BatchResult) -> None:
        if self.monitor is not None:
            self.monitor.offer(result.inserted, result.labelled)  # never blocks: scoring happens on the monitor thread
        assert self.snapshot_cadence is not None and self.retention is not None
        self.snapshot_cadence.after_batch(result.dictionary_updates)
        self._buffer_count += len(result.inserted) - self.retention.after_batch()
        self.metrics.buffer_events.set(self._buffer_count)

    # -- config reload -------------------------------------------------------------------------
    def reload_config(self, why: str = "request") -> dict[str, Any]:
        """Re-read the config file, swap in a new Settings, give each component its section.

        Returns what happened: ``result`` applied / partial (some keys need a restart) / rejected.
        """
        from sentiloop.daemon.reload import plan_reload

        if self.config_path is None:
            return {"result": "rejected", "error": "the daemon was started without --config: there is no file to reload"}
        with self._reload_lock:
            try:
                new = load_settings(self.config_path)
            except ConfigError as exc:
                self.metrics.config_reloads.labels(result="rejected").inc()
                log.error("config reload (%s) refused, keeping the running config:\n%s", why, exc)
                return {"result": "rejected", "error": str(exc)}
            plan = plan_reload(self.settings, new)
            if not plan.applied and not plan.ignored:
                return {"result": "unchanged"}
            self._apply(plan.effective, plan.applied)
            self.metrics.config_reloads.labels(result=plan.result).inc()
            if plan.ignored:
                log.warning("config reload (%s): %s changed but only take effect after a restart", why, ", ".join(plan.ignored))
            log.info("config reloaded from %s (%s): %s", self.config_path, why, ", ".join(plan.applied) or "nothing live")
            return {"result": plan.result, "applied": plan.applied, "restart_needed": plan.ignored}

    def _apply(self, settings: Settings, changed: list[str]) -> None:
        """Swap the settings and hand each component its section."""
        self.settings = settings
        configure_logging(settings.log_level, settings.log_format, secret_env(settings).values())
        if self.store is not None:
            self.store.apply(settings.dictionary, settings.buffer.retention_days)
        if self.snapshot_cadence is not None and self.retention is not None:
            self.snapshot_cadence.apply(settings.dictionary, settings.buffer)
            self.retention.apply(settings.buffer)
        if self.consumer is not None:
            self.consumer.apply(settings)
        if self.monitor is not None and any(k.startswith("retrain.drift.") for k in changed):
            self.monitor.apply(settings.retrain.drift)
        if self.controller is not None:
            self.controller.apply(settings)
            if any(k.startswith("models.enabled") for k in changed):
                self.controller.refresh_champion(reason="models.enabled changed by reload", reload=True)
        if any(k.startswith(("models.weights", "models.enabled")) for k in changed):
            self.serving.override_vote(settings.models.enabled, settings.models.weights)

    # -- probes --------------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Alive = the poll loop has turned recently (it is never blocked by heavy work)."""
        state = self.consumer.state if self.consumer else None
        if state is None or not state.last_poll_monotonic:
            return True, {"phase": "starting", "uptime_s": round(time.monotonic() - self.started, 1)}
        since = time.monotonic() - state.last_poll_monotonic
        return since < STALL_AFTER_S, {"last_poll_s_ago": round(since, 2), "batches": state.batches}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready = connected to Kafka, the buffer open and ingestion not paused by a failure
        (an instance with no partition is idle, not broken; one paused by an operator is ready)."""
        state = self.consumer.state if self.consumer else None
        outage = state.outage if state else None
        operator = bool(self.consumer and self.consumer.operator_paused)
        detail: dict[str, object] = {
            "kafka_connected": bool(state and state.connected),
            "partitions_assigned": state.assigned if state else 0,
            "buffer_open": self.store is not None,
            "ingestion": outage or ({"paused": True, "cause": "operator"} if operator else {"paused": False}),
            "stalled_partitions": dict(state.stalled) if state else {},
        }
        stuck = self._poll_loop_stuck()
        if stuck:
            detail["poll_loop"] = stuck
        if self._missing_codecs:
            detail["missing_codecs"] = self._missing_codecs
        ready = bool(state and state.connected and self.store is not None and outage is None and not state.stalled and not stuck)
        return ready, detail

    def _poll_loop_stuck(self) -> dict[str, object] | None:
        """The poll loop has not turned for kafka.stalled_after_s: the client is stuck (e.g. spinning on a
        batch it cannot decode), seen from outside the loop since the loop itself cannot report it."""
        state = self.consumer.state if self.consumer else None
        if state is None or not state.last_poll_monotonic:
            return None
        since = time.monotonic() - state.last_poll_monotonic
        if since < self.settings.kafka.stalled_after_s:
            return None
        return {"stuck": True, "last_poll_s_ago": round(since, 1), "last_poll_error": state.last_poll_error}

    def seconds_since_poll(self) -> float:
        state = self.consumer.state if self.consumer else None
        return time.monotonic() - state.last_poll_monotonic if state and state.last_poll_monotonic else 0.0
