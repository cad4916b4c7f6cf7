"""All Prometheus metrics of one daemon, on their own registry (so tests can run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentiloop.events import REASONS

PREFIX = "sentiloop"


class IngestMetrics:
    """The ingestion path's metrics; names are a stable interface (see ARCHITECTURE.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(f"{PREFIX}_events_consumed", "Kafka records read from the feedback topic", registry=r)
        self.events_stored = Counter(f"{PREFIX}_events_stored", "Valid events newly written to the buffer", registry=r)
        self.events_invalid = Counter(
            f"{PREFIX}_events_invalid", "Records refused and sent to the DLQ, by reason", ["reason"], registry=r
        )
        for reason in REASONS:
            self.events_invalid.labels(reason=reason)
        self.events_duplicate = Counter(
            f"{PREFIX}_events_duplicate", "Valid events whose event_id was already stored (no effect)", registry=r
        )
        self.buffer_events = Gauge(f"{PREFIX}_buffer_events", "Events currently in the refinement buffer", registry=r)
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag", "Records behind the partition high watermark", ["partition"], registry=r
        )
        self.ingest_latency = Histogram(
            f"{PREFIX}_ingest_latency_seconds",
            "Kafka record timestamp to offset commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.dictionary_words = Gauge(f"{PREFIX}_dictionary_words", "Words in the word-sentiment dictionary", registry=r)
        self.dictionary_updates = Counter(
            f"{PREFIX}_dictionary_updates", "Labelled events applied to the word-sentiment dictionary", registry=r
        )
        self.kafka_connected = Gauge(f"{PREFIX}_kafka_connected", "1 while the consumer has a broker connection", registry=r)
        self.dlq_errors = Counter(f"{PREFIX}_dlq_errors", "Failures to publish a refused record to the DLQ", registry=r)
        self.commit_errors = Counter(f"{PREFIX}_commit_errors", "Offset commits that failed (records will be redelivered)", registry=r)
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads", "Configuration reloads, by result", ["result"], registry=r
        )
        for result in ("applied", "rejected"):
            self.config_reloads.labels(result=result)
