"""Why ingestion is paused, since when, and when to try again (capped exponential backoff)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FIRST_RETRY_S = 0.5


@dataclass
class Outage:
    """A batch could not be made durable; the consumer pauses its partitions until a retry succeeds.

    ``cause`` names the part that failed (``buffer``, ``dlq``, ``internal``); ``kind`` is the failure's
    metric label (``disk_full``, ``read_only``, ``locked`` ...).
    """

    cause: str
    kind: str
    detail: str
    retry_max_s: float
    attempts: int = 0
    since_wall: float = field(default_factory=time.time)
    since: float = field(default_factory=time.monotonic)
    retry_at: float = 0.0

    def failed_again(self, cause: str, kind: str, detail: str) -> None:
        """Count a failed attempt and schedule the next one."""
        self.cause, self.kind, self.detail = cause, kind, detail
        self.attempts += 1
        delay = min(self.retry_max_s, FIRST_RETRY_S * 2 ** (self.attempts - 1))
        self.retry_at = time.monotonic() + delay

    def retry_due(self) -> bool:
        return time.monotonic() >= self.retry_at

    def describe(self) -> dict[str, object]:
        """What /readyz shows while ingestion is paused."""
        return {
            "paused": True,
            "cause": self.cause,
            "kind": self.kind,
            "detail": self.detail[:300],
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since_wall)),
            "attempts": self.attempts,
            "next_retry_s": round(max(0.0, self.retry_at - time.monotonic()), 1),
        }
