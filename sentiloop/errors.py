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


class BrokerError(SentiloopError):
    """The embedded broker cannot be found, started or reached."""


class CheckpointError(SentiloopError):
    """A model file or snapshot is missing, tampered with or of the wrong shape."""


class DataError(SentiloopError):
    """A dataset cannot be fetched, verified or parsed."""
