"""kafka-python client factories with the settings this project needs (and the broker facts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from sentiloop.config import KafkaConfig

log = logging.getLogger(__name__)


def make_consumer(config: KafkaConfig, bootstrap: Sequence[str], **overrides: Any) -> KafkaConsumer:
    """A group consumer that never auto-commits: offsets move only after the buffer commit."""
    kwargs: dict[str, Any] = {
        **config.client_kwargs(),
        "bootstrap_servers": list(bootstrap),
        "group_id": config.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": config.auto_offset_reset,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "max_poll_records": config.max_poll_records,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        # Retrains run off the poll loop, so a long gap between polls means the process is stuck.
        "max_poll_interval_ms": 300_000,
        "reconnect_backoff_max_ms": 2000,
    }
    kwargs.update(overrides)
    return KafkaConsumer(**kwargs)


def make_producer(config: KafkaConfig, bootstrap: Sequence[str], **overrides: Any) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement (DLQ records must not be lost)."""
    kwargs: dict[str, Any] = {
        **config.client_kwargs(),
        "bootstrap_servers": list(bootstrap),
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "reconnect_backoff_max_ms": 2000,
    }
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def ensure_topics(config: KafkaConfig, bootstrap: Sequence[str], topics: Sequence[str], timeout_s: float = 30.0) -> None:
    """Create the topics sentiloop uses if they do not exist yet (idempotent, retried until timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**config.client_kwargs(), bootstrap_servers=list(bootstrap), request_timeout_ms=10_000)
            try:
                existing = set(admin.list_topics())
                missing = [t for t in topics if t not in existing]
                if missing:
                    try:
                        admin.create_topics([NewTopic(t, config.partitions, 1) for t in missing])
                        log.info("created topics %s with %d partitions", missing, config.partitions)
                    except TopicAlreadyExistsError:
                        pass
                return
            finally:
                admin.close()
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("cannot reach Kafka at %s to check topics (%s); retrying", ",".join(bootstrap), exc)
            time.sleep(1.0)


@dataclass(frozen=True)
class KafkaClients:
    """The one factory the daemon's components get Kafka clients from (built once, in ``Daemon``).

    It is the transport seam: a test passes a subclass whose clients fail or record, and the
    consumer, the DLQ path and the announcer run unchanged against it.
    """

    config: KafkaConfig
    bootstrap: Sequence[str]

    def consumer(self, **overrides: Any) -> KafkaConsumer:
        return make_consumer(self.config, self.bootstrap, **overrides)

    def producer(self, **overrides: Any) -> KafkaProducer:
        return make_producer(self.config, self.bootstrap, **overrides)

    def ensure_topics(self, topics: Sequence[str], timeout_s: float = 30.0) -> None:
        ensure_topics(self.config, self.bootstrap, topics, timeout_s)
