"""Housekeeping after a stored batch: dictionary snapshots on a cadence, buffer retention hourly.

Both run on the poll thread after the batch is durable, so they are cheap and never raise: the buffer
holds the dictionary's durable state (a snapshot is an export for people and tools) and retention is a
clean-up, so a failure is logged, counted and tried again later — it must never take the daemon down.
Each holds its own config section; the daemon hands it a new one on reload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sentiloop.buffer.store import BufferStore
from sentiloop.config import BufferConfig, DictionaryConfig
from sentiloop.errors import CheckpointError, StorageUnavailable
from sentiloop.models.snapshots import DictionarySnapshots
from sentiloop.monitoring.metrics import IngestMetrics

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 3600.0
Clock = Callable[[], float]


class SnapshotCadence:
    """A dictionary snapshot every ``dictionary.snapshot_every`` updates (and one at shutdown)."""

    def __init__(self, store: BufferStore, snapshots: DictionarySnapshots, config: DictionaryConfig, buffer: BufferConfig,
                 metrics: IngestMetrics, clock: Clock = time.monotonic) -> None:
        self.store, self.snapshots, self.metrics, self.clock = store, snapshots, metrics, clock
        self.apply(config, buffer)
        self.since_snapshot = 0
        self._retry_at = 0.0

    def apply(self, config: DictionaryConfig, buffer: BufferConfig) -> None:
        self.config, self.retry_s = config, buffer.retry_max_s

    def after_batch(self, dictionary_updates: int) -> None:
        self.since_snapshot += dictionary_updates
        every = self.config.snapshot_every
        if every and self.since_snapshot >= every and self.clock() >= self._retry_at:
            self.write("periodic")

    def flush(self) -> None:
        """At shutdown: a last snapshot if anything changed since the previous one."""
        if self.store.dictionary is not None and self.since_snapshot:
            self.write("shutdown")

    def write(self, reason: str) -> None:
        try:
            version, path = self.snapshots.write(self.store.committed_dictionary(), reason=reason)
        except (OSError, StorageUnavailable, CheckpointError) as exc:
            self.metrics.snapshot_errors.inc()
            self._retry_at = self.clock() + self.retry_s
            log.warning("dictionary snapshot (%s) could not be written, retrying in %.0f s: %s", reason, self.retry_s, exc)
            return
        self.since_snapshot = 0
        log.info("dictionary snapshot v%d written to %s (%s)", version, path, reason)


class RetentionSweep:
    """Deletes events older than ``buffer.retention_days``, at most once an hour."""

    def __init__(self, store: BufferStore, config: BufferConfig, clock: Clock = time.monotonic) -> None:
        self.store, self.config, self.clock = store, config, clock
        self._last = 0.0

    def apply(self, config: BufferConfig) -> None:
        self.config = config

    def after_batch(self) -> int:
        """Events removed by this call (0 when it was not time, or the buffer could not be written)."""
        now = self.clock()
        if not self.config.retention_days or now - self._last <= RETENTION_EVERY_S:
            return 0
        self._last = now
        try:
            removed = self.store.apply_retention()
        except StorageUnavailable as exc:
            log.warning("retention skipped, tried again in %.0f s: %s", RETENTION_EVERY_S, exc)
            return 0
        if removed:
            log.info("retention removed %d events older than %s days", removed, self.config.retention_days)
        return removed
