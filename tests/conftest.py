"""Shared fixtures: a real embedded broker on 127.0.0.1, daemon subprocesses, event factories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from sentiloop.consumers.broker import EmbeddedBroker, free_port
from tests.postgres import PostgresSchema

POSITIVE = ["good", "great", "love", "excellent", "nice", "wonderful", "superb", "enjoyable"]
NEGATIVE = ["bad", "awful", "hate", "terrible", "poor", "boring", "dreadful", "dull"]
NEUTRAL = ["the", "movie", "plot", "film", "story", "actor", "scene", "book"]


def make_events(n: int, prefix: str = "e", seed: int = 0) -> list[dict]:
    """Labelled schema-v1 events whose words carry the label's sentiment."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(n):
        label = rng.randint(0, 4)
        vocab = NEGATIVE if label < 2 else POSITIVE if label > 2 else NEUTRAL
        words = rng.sample(vocab, 3) + rng.sample(NEUTRAL, 2)
        events.append({"event_id": f"{prefix}{i}", "text": " ".join(words), "label": label, "domain": "movies"})
    return events


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Kafka-protocol broker for the integration tests (topics are unique per test)."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker("127.0.0.1", 0, log_file=log) as running:
        yield running


@pytest.fixture
def topic() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class DaemonProcess:
    """``sentiloop run`` as a real subprocess, with its own config file and data_dir."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("SENTILOOP_CONFIG", None)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sentiloop", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Build daemons: ``daemon_factory(bootstrap, topic, data_dir=None, **overrides)``."""
    started: list[DaemonProcess] = []

    def build(bootstrap: str, topic: str, data_dir: Path | None = None, name: str = "d", env: dict[str, str] | None = None,
              **overrides: object) -> DaemonProcess:
        config = {
            "data_dir": str(data_dir or tmp_path / "data"),
            "kafka": {"bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}", "poll_timeout_ms": 200},
            "metrics": {"port": free_port()},
            "dictionary": {"snapshot_every": 0},
        }
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value  # type: ignore[dict-item]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        daemon = DaemonProcess(path, tmp_path / f"{name}.log", env).start()
        started.append(daemon)
        return daemon

    yield build
    for daemon in started:
        if daemon.alive():
            daemon.kill()


def produce(bootstrap: str, topic: str, values: list[bytes | dict], partitions: int = 3) -> None:
    """Send raw bytes or JSON objects to ``topic`` (created with ``partitions`` if missing)."""
    from sentiloop.config import KafkaConfig
    from sentiloop.consumers.clients import ensure_topics, make_producer

    config = KafkaConfig(bootstrap_servers=[bootstrap], topic=topic, partitions=partitions)
    ensure_topics(config, [bootstrap], [topic])
    producer = make_producer(config, [bootstrap])
    for value in values:
        raw = value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()
        key = value["event_id"].encode() if isinstance(value, dict) and "event_id" in value else None
        producer.send(topic, value=raw, key=key)
    producer.flush()
    producer.close()


def buffer_stats(data_dir: Path) -> dict:
    """Read counts the way `sentiloop status` does (read-only, while the daemon writes)."""
    from dataclasses import asdict

    from sentiloop.buffer import SQLiteBufferReader
    from sentiloop.config import Settings
    from sentiloop.errors import NotInitialised

    db = data_dir / "buffer.sqlite3"
    if not db.exists():
        return {"events_stored": 0}
    reader = SQLiteBufferReader(db, Settings().label_names)
    try:
        return asdict(reader.stats())
    except NotInitialised:  # created but not initialised yet
        return {"events_stored": 0}
    finally:
        reader.close()


def dictionary_rows(data_dir: Path) -> dict[str, tuple[float, int]]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "buffer.sqlite3")
    try:
        return {w: (s, u) for w, s, u in conn.execute("SELECT word, score, updates FROM dict_words")}
    finally:
        conn.close()


@pytest.fixture(scope="session")
def vader_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding the VADER ground truth: copied from the install's `sentiloop data fetch`
    cache (./sentiloop-data) when present, so the tests need no network; fetched with pip otherwise."""
    import shutil

    from sentiloop.datasets import fetch_vader_ground_truth
    from sentiloop.errors import DataError

    data_dir = tmp_path_factory.mktemp("vader")
    cached = Path(__file__).resolve().parent.parent / "sentiloop-data" / "datasets"
    if cached.is_dir():
        shutil.copytree(cached, data_dir / "datasets")
    try:
        fetch_vader_ground_truth(data_dir)
    except DataError as exc:
        pytest.skip(f"VADER ground truth unavailable (run `sentiloop data fetch` once): {exc}")
    return data_dir


def admin_token(data_dir: Path) -> str:
    """The token a daemon generated for its data_dir (what the CLI reads)."""
    return (data_dir / "admin.token").read_text(encoding="utf-8").strip()


def admin_request(port: int, path: str, token: str | None, body: dict | None = None, method: str = "POST",
                  timeout: float = 30) -> tuple[int, dict]:
    """One admin API call on 127.0.0.1; (status, JSON body) for any HTTP answer."""
    from sentiloop.daemon.client import call

    return call(f"http://127.0.0.1:{port}", token, method, path, body, timeout=timeout)


TINY_BERT_WORDS = ["good", "great", "love", "nice", "bad", "awful", "hate", "poor", "the", "a", "movie", "plot", "was", "is", "not", "very"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 BERT with a 21-word vocabulary, saved like any local model directory (no download)."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]
    tokenizer = transformers.BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def schema() -> Iterator[PostgresSchema]:
    """A fresh schema on the real PostgreSQL server (tests/postgres.py), dropped with its tables after the test."""
    created = PostgresSchema.create()
    yield created
    created.drop()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MB tmpfs mounted for this test (needs root, as on the CI machine)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
