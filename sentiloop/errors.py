"""One exception hierarchy, so callers (and the CLI) can catch *ours* and print a clear message.

    SentiloopError                   a condition a user can meet and fix; the message says how
    ├── ConfigError (ValueError)     config file, environment override, CLI argument, label set
    ├── DataError (ValueError)       a dataset or training input that cannot be used
    ├── CheckpointError              a model file, snapshot or checkpoint missing, tampered or misshapen
    ├── NotInitialised               state that does not exist yet (no buffer): the message says what creates it
    ├── InvalidEvent                 one Kafka record refused (goes to the DLQ with ``reason``)
    ├── BrokerError                  the embedded broker cannot be found, started or reached
    ├── DLQUnavailable               the DLQ did not acknowledge: the batch is held and retried
    └── StorageUnavailable           the buffer cannot be written now: ingestion pauses and retries
        └── BufferFileError          the buffer file is not a sentiloop buffer

Anything else escaping is a bug: the CLI prints its traceback and asks for a report. ``ConfigError``
and ``DataError`` are also ``ValueError`` so that pydantic validators and generic callers treat them
as the invalid values they are. A missing champion is a ``CheckpointError`` naming ``sentiloop train``.
"""

from __future__ import annotations


class SentiloopError(Exception):
    """Base of every error sentiloop raises on purpose; its message is meant for a human."""


class ConfigError(SentiloopError, ValueError):
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
    """The buffer cannot be written right now (disk full, read-only, locked, I/O error, server gone).

    Transient by nature: the consumer pauses, keeps the batch, and retries with backoff. ``kind`` is a
    short metric label (``disk_full``, ``read_only``, ``locked``, ``io_error``, ``cant_open``, ``corrupt``;
    PostgreSQL adds ``connection_lost``, ``server_unavailable``, ``postgres_error``).
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


class NotInitialised(SentiloopError):
    """Something sentiloop creates is not there yet (the buffer before the daemon's first start)."""


class CheckpointError(SentiloopError):
    """A model file or snapshot is missing, tampered with or of the wrong shape."""


class DataError(SentiloopError, ValueError):
    """A dataset cannot be fetched, verified or parsed."""
