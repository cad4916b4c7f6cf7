"""``sentiloop replay``: send a JSONL file to the feedback topic, one record per line, at a chosen rate.

Lines are sent as they are (no validation here): the daemon decides what is valid, so replay is
also the way to test the DLQ. The record key is the line's ``ref_event_id`` (a label event) or else its
``event_id``, which keeps an event, its re-sends and its labels on one partition, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sentiloop.config import KafkaConfig
from sentiloop.consumers.clients import ensure_topics, make_producer


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


def _key(line: bytes) -> bytes | None:
    try:
        record = json.loads(line)
        event_id = record.get("ref_event_id") or record.get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id.encode("utf-8") if isinstance(event_id, str) else None


def count_lines(path: Path) -> int:
    return sum(1 for _ in _lines(path))


def replay(
    path: Path,
    config: KafkaConfig,
    bootstrap: Sequence[str],
    topic: str,
    rate: float | None = None,
    progress: bool = True,
) -> int:
    """Produce every non-empty line of ``path``; ``rate`` caps records per second. Returns the count."""
    from tqdm import tqdm

    ensure_topics(config, bootstrap, [topic])
    producer = make_producer(config, bootstrap, linger_ms=10 if rate is None else 0)
    total = count_lines(path)
    sent = 0
    start = time.perf_counter()
    try:
        with tqdm(total=total, unit="ev", desc=f"replay → {topic}", disable=not progress) as bar:
            for line in _lines(path):
                if rate:
                    delay = start + sent / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                producer.send(topic, value=line, key=_key(line))
                sent += 1
                bar.update(1)
        producer.flush()
    finally:
        producer.close()
    return sent
