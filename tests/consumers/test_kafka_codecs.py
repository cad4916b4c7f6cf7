"""Production-shaped Kafka records through the real daemon: every compression codec, keys and
headers, records at the size limit — and a batch the client cannot decode, which must show in the
probes and metrics instead of a silent stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiloop.config import KafkaConfig
from sentiloop.consumers.clients import ensure_topics, make_producer
from tests.conftest import buffer_stats, make_events, wait_until
from tests.consumers.test_integration_ingest import http_get, metrics_port, read_topic

pytestmark = pytest.mark.integration


def produce_compressed(bootstrap: str, topic: str, values: list[bytes], codec: str) -> None:
    config = KafkaConfig(bootstrap_servers=[bootstrap], topic=topic, partitions=1)
    ensure_topics(config, [bootstrap], [topic])
    producer = make_producer(config, [bootstrap], compression_type=codec, linger_ms=20)
    for i, value in enumerate(values):
        producer.send(topic, value=value, key=f"k{i}".encode(), headers=[("origin", b"test"), ("trace-id", str(i).encode())])
    producer.flush()
    producer.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_with_keys_headers_and_size_limit(broker, topic, daemon_factory, tmp_path: Path, codec: str) -> None:  # type: ignore[no-untyped-def]
    limit = 8192
    events = make_events(300, prefix=f"{codec}-")
    values = [json.dumps(e).encode() for e in events]
    at_limit = b'{"event_id": "at-limit", ' + b" " * (limit - 60) + b'"text": "padded", "label": 2}'
    over = b'{"event_id": "over", ' + b" " * limit + b'"text": "too big"}'
    assert len(at_limit) <= limit < len(over)
    produce_compressed(broker.bootstrap, topic, [*values[:150], at_limit, over, *values[150:]], codec)
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, buffer={"max_record_bytes": limit})
    wait_until(lambda: buffer_stats(data)["events_stored"] == 301, what=f"every {codec} event stored")
    (refused,) = read_topic(broker.bootstrap, f"{topic}.dlq", 1)
    assert dict(refused.headers)["sentiloop-reason"] == b"record_too_large" and refused.value == over
    assert refused.key == b"k151"
    assert daemon.alive()


def test_an_undecodable_batch_shows_as_a_stalled_partition(broker, topic, daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shadow = tmp_path / "no-lz4"  # this daemon's Python cannot import lz4, as without the codec installed
    (shadow / "lz4").mkdir(parents=True)
    (shadow / "lz4" / "__init__.py").write_text("raise ImportError('lz4 hidden for this test')\n")
    produce_compressed(broker.bootstrap, topic, [json.dumps(e).encode() for e in make_events(50, prefix="u")], "lz4")
    data = tmp_path / "data"
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, env={"PYTHONPATH": str(shadow)},
                            kafka={"stalled_after_s": 3})
    port = metrics_port(daemon)

    def readiness() -> dict:
        body = http_get(port, "/readyz")[1]
        return json.loads(body) if body else {}

    # kafka-python spins inside poll() on such a batch, so the poll loop itself cannot report it:
    # the probes, read on another thread, see the loop stop turning and say why.
    wait_until(lambda: readiness().get("poll_loop", {}).get("stuck"), timeout=60, what="the stuck poll loop reported")
    detail = readiness()
    assert "UnsupportedCodecError" in detail["poll_loop"]["last_poll_error"] and detail["missing_codecs"] == ["lz4"]
    assert http_get(port, "/readyz")[0] == 503
    metrics = http_get(port, "/metrics")[1]
    assert 'sentiloop_poll_errors_total{error="UnsupportedCodecError"} 1.0' in metrics
    seconds = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("sentiloop_seconds_since_poll "))
    assert seconds >= 3
    assert daemon.alive() and buffer_stats(data)["events_stored"] == 0
