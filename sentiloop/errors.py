"""One exception hierarchy, so callers (and the CLI) can catch *ours* and print a clear message."""

from __future__ import annotations


class SentiloopError(Exception):
    """Base of every error sentiloop raises on purpose; its message is meant for a human."""


class ConfigError(SentiloopError):
    """A config file, environment override or CLI argument is invalid (message names the key path)."""


class InvalidEvent(SentiloopError):
    """A Kafka record is not a valid FeedbackEvent; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DLQUnavailable(SentiloopError):
    """Refused records could not be acknowledged by the DLQ topic; the batch is held and retried."""


class BrokerError(SentiloopError):
    """The embedded broker cannot be found, started or reached."""


class StorageUnavailable(SentiloopError):
    """The buffer cannot be written right now (disk full, read-only, locked, I/O error).

    Transient by nature: the consumer pauses, keeps the batch, and retries with backoff. ``kind`` is a
    short metric label (``disk_full``, ``read_only``, ``locked``, ``io_error``, ``cant_open``, ``corrupt``).
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"buffer unavailable ({kind}): {detail}")
        self.kind = kind
        self.detail = detail


class BufferFileError(StorageUnavailable):
    """The buffer file is not a sentiloop buffer (corrupt, or another file): the message says what to do.

    At start-up it stops ``run``/``status`` with that message; met by a running daemon (the file was
    replaced or damaged under it) it is an outage like the others: ingestion pauses until it is fixed.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("corrupt", detail)

    def __str__(self) -> str:
        return self.detail


class CheckpointError(SentiloopError):
    """A model file or snapshot is missing, tampered with or of the wrong shape."""


class DataError(SentiloopError):
    """A dataset cannot be fetched, verified or parsed."""
