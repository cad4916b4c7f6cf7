"""All Prometheus metrics of one daemon, on their own registry (so tests can run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentiloop.events import REASONS

PREFIX = "sentiloop"


class IngestMetrics:
    """The ingestion path's metrics; names are a stable interface (README "Metrics"; docs/architecture.md)."""

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
        self.labels_applied = Counter(f"{PREFIX}_labels_applied", "Delayed labels attached to a stored event (label events)", registry=r)
        self.label_corrections = Counter(
            f"{PREFIX}_label_corrections", "Labels that replaced an earlier, different label of the same event", registry=r)
        self.labels_pending = Gauge(f"{PREFIX}_labels_pending", "Label events waiting for their event to arrive", registry=r)
        self.labels_expired = Counter(
            f"{PREFIX}_labels_expired", "Label events whose event never arrived within buffer.label_wait_s (sent to the DLQ)", registry=r)
        self.events_awaiting_label = Gauge(f"{PREFIX}_events_awaiting_label", "Stored events without a label yet", registry=r)
        self.label_delay = Histogram(
            f"{PREFIX}_label_delay_seconds", "Event ts (the prediction) to label ts, for delayed labels",
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400), registry=r)
        self.kafka_connected = Gauge(f"{PREFIX}_kafka_connected", "1 while the consumer has a broker connection", registry=r)
        self.dlq_errors = Counter(f"{PREFIX}_dlq_errors", "Failures to publish a refused record to the DLQ", registry=r)
        self.commit_errors = Counter(f"{PREFIX}_commit_errors", "Offset commits that failed (records will be redelivered)", registry=r)
        self.ingest_paused = Gauge(
            f"{PREFIX}_ingest_paused", "1 while ingestion is paused because a batch cannot be made durable, by cause", ["cause"], registry=r
        )
        for cause in ("buffer", "dlq", "internal", "operator"):
            self.ingest_paused.labels(cause=cause)
        self.buffer_write_errors = Counter(
            f"{PREFIX}_buffer_write_errors", "Failed attempts to write a batch to the buffer, by kind", ["kind"], registry=r
        )
        for kind in ("disk_full", "read_only", "locked", "io_error", "cant_open", "corrupt", "sqlite_error",
                     "connection_lost", "server_unavailable", "postgres_error"):
            self.buffer_write_errors.labels(kind=kind)
        self.poll_errors = Counter(f"{PREFIX}_poll_errors", "Kafka polls that failed, by error (e.g. UnsupportedCodecError)", ["error"], registry=r)
        for error in ("UnsupportedCodecError", "CorruptRecordError", "KafkaConnectionError", "KafkaTimeoutError"):
            self.poll_errors.labels(error=error)  # the usual ones exist from the start (dashboards, rate())
        self.partition_stalled = Gauge(
            f"{PREFIX}_partition_stalled", "1 while a partition has records waiting but its position does not move", ["partition"], registry=r
        )
        self.seconds_since_poll = Gauge(
            f"{PREFIX}_seconds_since_poll", "Seconds since the poll loop last turned (a stuck client keeps growing it)", registry=r
        )
        self.snapshot_errors = Counter(
            f"{PREFIX}_snapshot_errors", "Dictionary snapshots that could not be written (retried later)", registry=r
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads", "Configuration reloads, by result", ["result"], registry=r
        )
        for result in ("applied", "partial", "rejected"):
            self.config_reloads.labels(result=result)
        # Continual learning.
        self.drift_detected = Counter(f"{PREFIX}_drift_detected", "Drift signals that fired, by signal", ["signal"], registry=r)
        self.drift_statistic = Gauge(f"{PREFIX}_drift_statistic", "Current drift statistic, by signal", ["signal"], registry=r)
        self.drift_scored = Counter(f"{PREFIX}_drift_scored_events", "Labelled events the champion scored for drift detection", registry=r)
        self.drift_dropped = Counter(f"{PREFIX}_drift_dropped", "Labelled events not scored for drift (monitor queue full)", registry=r)
        for signal in ("error_rate", "label_shift", "oov_rate", "prediction_shift", "confidence_drop"):
            self.drift_detected.labels(signal=signal)
        # Label-free monitoring of the champion on all traffic (labelled or not).
        self.monitored = Counter(f"{PREFIX}_monitored_events", "Events the champion scored for label-free monitoring", registry=r)
        self.estimated_accuracy = Gauge(
            f"{PREFIX}_estimated_accuracy", "Champion accuracy estimated from its calibrated confidence on recent traffic (CBPE)", registry=r)
        self.realised_accuracy = Gauge(
            f"{PREFIX}_realised_accuracy", "Champion accuracy on the matured labels of the newest traffic chunk that has enough of them",
            registry=r)
        self.estimation_error = Gauge(
            f"{PREFIX}_estimation_error", "Estimated minus realised accuracy of that chunk (CBPE's error; > 0: it was optimistic)",
            registry=r)
        self.prediction_confidence = Gauge(
            f"{PREFIX}_prediction_confidence", "Mean top-class probability of the champion on recent traffic", registry=r)
        self.shadow_running = Gauge(f"{PREFIX}_shadow_running", "1 while a challenger scores live traffic in shadow", registry=r)
        self.shadow_events = Gauge(f"{PREFIX}_shadow_events", "Live events the shadowed challenger has scored", registry=r)
        self.shadow_agreement = Gauge(f"{PREFIX}_shadow_agreement", "Share of shadowed events where challenger and champion agree", registry=r)
        self.shadow_accuracy = Gauge(f"{PREFIX}_shadow_accuracy", "Accuracy in the shadow run, by model and kind (estimated, realised)",
                                     ["model", "kind"], registry=r)
        self.shadow_decisions = Counter(f"{PREFIX}_shadow_decisions", "Shadow runs that ended, by result", ["result"], registry=r)
        for result in ("promoted", "refused"):
            self.shadow_decisions.labels(result=result)
        self.champion_ece = Gauge(
            f"{PREFIX}_champion_ece", "Expected calibration error of the champion on its golden set (before recalibration)", registry=r)
        self.retrain_runs = Counter(f"{PREFIX}_retrain_runs", "Retrain runs, by trigger and outcome", ["trigger", "status"], registry=r)
        for trigger in ("drift", "volume", "schedule", "manual"):
            for status in ("promoted", "rejected", "skipped", "failed", "shadow"):
                self.retrain_runs.labels(trigger=trigger, status=status)
        self.retrain_duration = Gauge(f"{PREFIX}_retrain_duration_seconds", "Duration of the last retrain, by member", ["member"], registry=r)
        self.model_accuracy = Gauge(f"{PREFIX}_model_accuracy", "Accuracy by member and split", ["member", "split"], registry=r)
        self.ensemble_weight = Gauge(f"{PREFIX}_ensemble_weight", "Champion ensemble weight by member", ["member"], registry=r)
        self.promotions = Counter(f"{PREFIX}_promotions", "Challengers promoted to champion", registry=r)
        self.refinement_rate = Gauge(f"{PREFIX}_refinement_rate", "Refinement rate of the last retrain iteration", registry=r)
        self.data_quality = Gauge(f"{PREFIX}_data_quality_score", "Data quality score of the last retrain iteration", registry=r)
        self.bias_score = Gauge(f"{PREFIX}_bias_score", "Data-bias check scores of the last retrain", ["check"], registry=r)
        self.bias_flagged = Counter(f"{PREFIX}_bias_flagged", "Bias checks scoring above 0.7", ["check"], registry=r)
        self.champion_version = Gauge(f"{PREFIX}_champion_version", "Serving ensemble version", registry=r)
        self.champion_registry_version = Gauge(f"{PREFIX}_champion_registry_version",
                                               "MLflow registry version of the serving ensemble (the same on every replica); 0: not registered",
                                               registry=r)
        self.retrain_leader = Gauge(f"{PREFIX}_retrain_leader", "1 on the one replica that decides and runs retrains", registry=r)
        self.retrain_pending = Gauge(f"{PREFIX}_retrain_pending", "1 while a drift retrain waits for drift_settle_events new events", registry=r)
        self.retrain_running = Gauge(f"{PREFIX}_retrain_running", "1 while a retrain worker runs", registry=r)
