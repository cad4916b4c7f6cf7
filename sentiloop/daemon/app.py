"""The composition root (cf. Quix Streams' ``Application``): build, wire, run and stop every part.

Start order: embedded broker (if configured) → buffer + dictionary → metrics/health server →
consumer loop. Stop order is the reverse, and a SIGTERM lets the current batch finish and commit.
SIGHUP re-reads the config file: a bad file is refused and the running config stays.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sentiloop.buffer.sqlite import SQLiteBufferStore
from sentiloop.buffer.store import BatchResult
from sentiloop.config import Settings, load_settings
from sentiloop.consumers.broker import EmbeddedBroker
from sentiloop.consumers.loop import FeedbackConsumer
from sentiloop.errors import CheckpointError, ConfigError, StorageUnavailable
from sentiloop.models.lexicon import load_seed_lexicon
from sentiloop.models.snapshots import DictionarySnapshots
from sentiloop.models.word_sentiment import WordSentimentModel
from sentiloop.monitoring.http import HealthServer
from sentiloop.monitoring.metrics import IngestMetrics

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0
STALL_AFTER_S = 60.0


def build_dictionary(settings: Settings) -> WordSentimentModel:
    d = settings.dictionary
    return WordSentimentModel(settings.polarities, d.alpha, d.min_count, d.tokenizer, d.temperature)


def open_store(settings: Settings, dictionary: WordSentimentModel | None) -> SQLiteBufferStore:
    """The buffer under ``data_dir``, with the dictionary loaded (and seeded once, if configured)."""
    store = SQLiteBufferStore.for_settings(settings, dictionary)
    if dictionary is not None and settings.dictionary.seed_lexicon != "none":
        added = store.seed_dictionary(load_seed_lexicon(settings.dictionary.seed_lexicon, settings.polarities), settings.dictionary.seed_lexicon)
        if added:
            log.info("seeded the dictionary with %d words from %s", added, settings.dictionary.seed_lexicon)
    return store


class Announcer:
    """Publishes champion changes on ``<topic>.models`` (JSON: version, previous, reason, metrics)."""

    def __init__(self, settings: Settings, bootstrap: list[str]) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self._producer: Any = None

    def __call__(self, message: dict[str, Any]) -> None:
        from kafka.errors import KafkaError

        from sentiloop.consumers.clients import make_producer

        try:
            if self._producer is None:
                self._producer = make_producer(self.settings.kafka, self.bootstrap)
            self._producer.send(self.settings.kafka.models_topic, json.dumps(message).encode()).get(timeout=30)
            log.info("announced champion v%s on %s", message.get("version"), self.settings.kafka.models_topic)
        except KafkaError as exc:
            log.error("could not announce the new champion on %s: %s", self.settings.kafka.models_topic, exc)


class Daemon:
    """A running sentiloop: ``run()`` blocks until SIGTERM/SIGINT (or ``stop()``)."""

    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.broker: EmbeddedBroker | None = None
        self.store: SQLiteBufferStore | None = None
        self.http: HealthServer | None = None
        self.consumer: FeedbackConsumer | None = None
        self.monitor: Any = None
        self.controller: Any = None
        self.metrics = IngestMetrics()
        self.snapshots = DictionarySnapshots(settings.data_dir / "dictionary", settings.dictionary.keep_snapshots)
        self._since_snapshot = 0
        self._snapshot_retry_at = 0.0
        self._last_retention = 0.0
        self._buffer_count = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._install_signal_handlers()
        try:
            bootstrap = self._start_broker()
            dictionary = build_dictionary(settings)
            self.store = open_store(settings, dictionary)
            self._buffer_count = self.store.stats().events_stored
            self.metrics.buffer_events.set(self._buffer_count)
            self.metrics.dictionary_words.set(len(dictionary.words))
            self.consumer = FeedbackConsumer(settings, bootstrap, self.store, self.metrics, on_batch=self._after_batch)
            self._start_continual_learning(bootstrap)
            if settings.metrics.enabled:
                self.http = HealthServer(
                    settings.metrics.host, settings.metrics.port, self.metrics.registry, self.liveness, self.readiness,
                    post_routes={"/retrain": self._retrain_request},
                ).start()
            print(
                f"sentiloop: consuming {settings.kafka.topic} from {','.join(bootstrap)}; buffer {settings.db_path}"
                + (f"; metrics http://{self.http.host}:{self.http.port}/metrics" if self.http else ""),
                flush=True,
            )
            self.consumer.run(self.stop_event)
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self.stop_event.set()

    def _start_broker(self) -> list[str]:
        servers = self.settings.kafka.bootstrap_servers
        if servers != "embedded":
            return list(servers)
        self.broker = EmbeddedBroker("127.0.0.1", self.settings.kafka.embedded_port, self.settings.data_dir / "broker.log")
        self.broker.start()
        print(f"sentiloop: started the embedded in-memory broker on {self.broker.bootstrap} (development only)", flush=True)
        return [self.broker.bootstrap]

    def _start_continual_learning(self, bootstrap: list[str]) -> None:
        """Drift monitor + retrain controller (both off the poll loop); idle until a champion exists."""
        from sentiloop.daemon.continual import RetrainController
        from sentiloop.monitoring.drift_monitor import DriftMonitor

        assert self.store is not None
        self.monitor = DriftMonitor(self.settings.retrain.drift, len(self.settings.labels), self.metrics).start()
        self.controller = RetrainController(self.settings, self.store, self.metrics, self.monitor,
                                            announce=Announcer(self.settings, bootstrap)).start()

    def _retrain_request(self, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        mode = body.get("mode")
        if mode not in (None, "strategic", "full"):
            return 400, {"error": "mode must be 'strategic' or 'full'"}
        reason = str(body.get("reason") or "manual request")[:500]
        answer = self.controller.request(reason, mode)  # type: ignore[arg-type]
        return (202 if answer["accepted"] else 409), answer

    def _shutdown(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.store is not None and self.store.dictionary is not None and self._since_snapshot:
            self._snapshot("shutdown")
        if self.store is not None:
            self.store.close()
        if self.http is not None:
            self.http.stop()
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
            self.reload_config()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)

    # -- per batch housekeeping (cheap: runs on the poll thread) ---------------------------------
    def _after_batch(self, result: BatchResult) -> None:
        if self.monitor is not None:
            self.monitor.offer(result.inserted)  # never blocks: scoring happens on the monitor thread
        self._buffer_count += len(result.inserted)
        self.metrics.buffer_events.set(self._buffer_count)
        self._since_snapshot += result.dictionary_updates
        every = self.settings.dictionary.snapshot_every
        now = time.monotonic()
        if every and self._since_snapshot >= every and now >= self._snapshot_retry_at:
            self._snapshot("periodic")
        if self.settings.buffer.retention_days and now - self._last_retention > RETENTION_EVERY_S:
            assert self.store is not None
            self._last_retention = now
            try:
                removed = self.store.apply_retention()
            except StorageUnavailable as exc:
                log.warning("retention skipped, tried again in %.0f s: %s", RETENTION_EVERY_S, exc)
                return
            if removed:
                self._buffer_count -= removed
                log.info("retention removed %d events older than %s days", removed, self.settings.buffer.retention_days)

    def _snapshot(self, reason: str) -> None:
        """Write a dictionary snapshot; a failure is counted and retried later, never raised.

        The buffer holds the dictionary's durable state, so a missing snapshot loses nothing: it is
        an export for people and tools, and must never take the daemon down.
        """
        assert self.store is not None and self.store.dictionary is not None
        try:
            version, path = self.snapshots.write(self.store.committed_dictionary(), reason=reason)
        except (OSError, StorageUnavailable, CheckpointError) as exc:
            self.metrics.snapshot_errors.inc()
            retry_s = self.settings.buffer.retry_max_s
            self._snapshot_retry_at = time.monotonic() + retry_s
            log.warning("dictionary snapshot (%s) could not be written, retrying in %.0f s: %s", reason, retry_s, exc)
            return
        self._since_snapshot = 0
        log.info("dictionary snapshot v%d written to %s (%s)", version, path, reason)

    # -- config reload -------------------------------------------------------------------------
    def reload_config(self) -> bool:
        """Re-read the config file; apply what can change live, refuse a bad file (old config stays)."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the daemon was started without --config")
            return False
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels(result="rejected").inc()
            log.error("config reload refused, keeping the running config:\n%s", exc)
            return False
        needs_restart = [
            key for key in ("data_dir", "labels", "kafka", "metrics") if getattr(new, key) != getattr(self.settings, key)
        ]
        if needs_restart:
            log.warning("config reload: %s changed and only take effect after a restart", ", ".join(needs_restart))
        self.settings.dictionary = new.dictionary
        self.settings.buffer = new.buffer
        self.settings.log_level = new.log_level
        logging.getLogger().setLevel(new.log_level)
        if self.store is not None and self.store.dictionary is not None:
            d, model = new.dictionary, self.store.dictionary
            model.alpha, model.min_count, model.temperature = d.alpha, d.min_count, d.temperature
            self.store.retention_days = new.buffer.retention_days
        self.metrics.config_reloads.labels(result="applied").inc()
        log.info("config reloaded from %s", self.config_path)
        return True

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
        (an instance with no partition is idle, not broken)."""
        state = self.consumer.state if self.consumer else None
        outage = state.outage if state else None
        detail: dict[str, object] = {
            "kafka_connected": bool(state and state.connected),
            "partitions_assigned": state.assigned if state else 0,
            "buffer_open": self.store is not None,
            "ingestion": outage or {"paused": False},
        }
        return bool(state and state.connected and self.store is not None and outage is None), detail
