"""The BufferStore over any ``Dialect``: one connection, one write transaction per poll batch.

Failure contract (what the consumer builds on): a write that cannot reach the storage raises
:class:`StorageUnavailable` and leaves nothing half-done — the transaction is rolled back, the
connection is dropped (the next call reopens it, so a file made writable again or a restarted
server is seen), and the in-memory dictionary is re-read from the committed rows before it is used
again. Any other exception from ``append_batch`` comes from the records themselves and is re-raised
unchanged (the consumer then finds the poison record and sends it to the DLQ).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import numpy as np

from sentiloop.buffer import dictionary_rows, event_log
from sentiloop.buffer.dialect import Connection, Dialect
from sentiloop.buffer.store import BatchResult, BufferStats, PendingLabel, SourcedEvent, StoredEvent
from sentiloop.errors import BufferFileError, ConfigError
from sentiloop.events import FeedbackEvent
from sentiloop.models.word_sentiment import PendingWord, WordEntry, WordSentimentModel

if TYPE_CHECKING:
    from sentiloop.config import DictionaryConfig


def clock_ms() -> int:
    return int(time.time() * 1000)


class SQLBufferStore:
    """Buffer + dictionary state in one database (``BufferStore``); the engine is the dialect's."""

    def __init__(
        self,
        dialect: Dialect,
        label_names: Sequence[str],
        dictionary: WordSentimentModel | None = None,
        holdout_share: float = 0.1,
        retention_days: float | None = None,
    ) -> None:
        self.dialect = dialect
        self.label_names = list(label_names)
        self.dictionary = dictionary
        self.holdout_share = holdout_share
        self.retention_days = retention_days
        self._lock = threading.RLock()  # one connection, shared by the poll and controller threads
        self._conn: Connection | None = None
        self._dictionary_stale = False
        self._writes_seen = 0  # dictionary row changes (all writers) the in-memory model reflects
        self._connection()
        self._check_labels()
        if dictionary is not None:
            self.reload_dictionary()

    # -- connection and transactions -----------------------------------------------------------
    def _connection(self) -> Connection:
        """The open connection, (re)opened on demand: after an outage the storage may be back."""
        if self._conn is not None:
            return self._conn
        try:
            conn = self.dialect.connect()
        except BaseException as exc:
            raise self.dialect.storage_failure(exc) or exc from None
        try:
            self.dialect.prepare(conn)
        except BaseException as exc:
            _close_quietly(conn)
            failure = None if isinstance(exc, BufferFileError) else self.dialect.storage_failure(exc)
            raise failure or exc from None
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock:
            try:
                yield self._connection()
            except Exception as exc:
                failure = self.dialect.storage_failure(exc)
                if failure is None or failure is exc:
                    raise
                self._drop_connection()
                raise failure from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that serialises against every other writer (the dialect says how)."""
        with self._lock:
            conn = self._connection()
            try:
                self.dialect.begin_write(conn)
                if self._dictionary_stale and self.dictionary is not None:
                    self._load_dictionary(conn)  # a failed write left uncommitted updates in memory
                yield conn
                conn.execute("COMMIT")  # may fail too (disk full at commit): handled below like the rest
            except BaseException as exc:
                self._abort(conn)
                failure = self.dialect.storage_failure(exc)
                if failure is None:
                    raise
                self._drop_connection()
                raise failure from exc

    def _abort(self, conn: Connection) -> None:
        """Roll back, and bring the in-memory dictionary back to the committed rows (or mark it stale)."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception:
            pass  # a connection that cannot roll back is dropped; the server discards the open transaction
        if self.dictionary is not None:
            self._dictionary_stale = True
            try:
                self._load_dictionary(conn)
            except Exception:
                pass  # stays stale: re-read inside the next write transaction

    def _check_labels(self) -> None:
        """Refuse to reuse a buffer written with another label set: indices would change meaning."""
        with self._read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = 'labels'").fetchone()
        if stored is None:
            with self._write() as conn:
                conn.execute("INSERT INTO meta VALUES ('labels', ?) ON CONFLICT DO NOTHING", (json.dumps(self.label_names),))
        elif json.loads(stored[0]) != self.label_names:
            raise ConfigError(
                f"buffer {self.dialect.location} was written with labels {json.loads(stored[0])}, "
                f"but the config has {self.label_names}; use another buffer or the original labels"
            )

    def apply(self, dictionary: DictionaryConfig, retention_days: float | None) -> None:
        """A reloaded config: the update rule takes effect at the next batch, under the write lock."""
        with self._lock:
            self.retention_days = retention_days
            if self.dictionary is not None:
                model = self.dictionary
                model.alpha, model.min_count, model.temperature = dictionary.alpha, dictionary.min_count, dictionary.temperature

    # -- dictionary state ----------------------------------------------------------------------
    def reload_dictionary(self) -> None:
        """Replace the in-memory dictionary with the committed rows."""
        with self._read() as conn:
            self._load_dictionary(conn)

    def committed_dictionary(self) -> WordSentimentModel:
        """The dictionary as committed (what a snapshot may show). The in-memory model is fresh only
        for the words this process changed: when another writer (a replica, another process on the
        file) has changed rows since, every row is re-read; a lone writer's cache is used as it is."""
        assert self.dictionary is not None
        with self._lock:
            if self._dictionary_stale:
                self.reload_dictionary()
            else:
                with self._read() as conn:
                    if dictionary_rows.writes(conn) != self._writes_seen:
                        self._load_dictionary(conn)
            return self.dictionary

    def _load_dictionary(self, conn: Connection) -> None:
        assert self.dictionary is not None
        self._writes_seen = dictionary_rows.writes(conn)
        dictionary_rows.load(conn, self.dictionary)
        self._dictionary_stale = False

    def seed_dictionary(self, lexicon: Mapping[str, float], source: str) -> int:
        assert self.dictionary is not None
        with self._write() as conn:
            added = dictionary_rows.seed(conn, self.dictionary, lexicon, source)
        self._writes_seen += added
        return added

    # -- writes --------------------------------------------------------------------------------
    def append_batch(self, records: Sequence[SourcedEvent], invalid: Mapping[str, int] | None = None) -> BatchResult:
        """Insert new events and label events, apply every label whose event is stored, update the
        dictionary for each label applied, count the rest: one transaction."""
        known = dictionary_rows.tokenized(self.dictionary, (r.event.text for r in records if isinstance(r.event, FeedbackEvent)
                                                             and r.event.label is not None)) if self.dictionary is not None else {}
        with self._write() as conn:
            batch = event_log.Batch(conn, self.dialect, self.holdout_share, clock_ms())
            batch.store(records)
            if self.dictionary is not None:
                dictionary_rows.learn(conn, self.dictionary, batch.learn, known)
                batch.result.dictionary_updates = len(batch.learn)
            for reason, count in (invalid or {}).items():
                event_log.bump(conn, f"invalid:{reason}", count)
        self._writes_seen += batch.result.dictionary_updates  # committed: the rows this cache has seen
        return batch.result

    def pending_labels_older_than(self, received_before_ms: int, limit: int = 1000) -> list[PendingLabel]:
        """Label events still waiting for their event, received before ``received_before_ms`` (oldest first)."""
        with self._read() as conn:
            return event_log.pending_labels_older_than(conn, received_before_ms, limit)

    def expire_labels(self, label_ids: Sequence[str]) -> int:
        """Mark pending labels expired (after the DLQ acknowledged them); a label applied meanwhile stays applied."""
        with self._write() as conn:
            return event_log.expire_labels(conn, label_ids)

    def set_mark(self, mark: str, label_seq: int | None = None) -> None:
        with self._write() as conn:
            event_log.set_mark(conn, mark, label_seq, clock_ms())

    def apply_retention(self, now_ms: int | None = None) -> int:
        if self.retention_days is None:
            return 0
        cutoff = (now_ms if now_ms is not None else clock_ms()) - int(self.retention_days * 86_400_000)
        with self._write() as conn:
            return event_log.apply_retention(conn, cutoff)

    # -- reads ---------------------------------------------------------------------------------
    def label_position(self) -> int:
        """The newest label position: marks and retrain windows are in these units (see StoredEvent)."""
        with self._read() as conn:
            return event_log.LabelPositions(conn).last

    def mark_seq(self, mark: str) -> int:
        with self._read() as conn:
            return event_log.mark_seq(conn, mark)

    def count_since(self, mark: str) -> int:
        return self.count_after(self.mark_seq(mark))

    def count_after(self, label_seq: int) -> int:
        with self._read() as conn:
            return event_log.count_after(conn, label_seq)

    def sample(
        self, n: int, *, label: int | None = None, domain: str | None = None, split: str | None = None, seed: int = 0
    ) -> list[StoredEvent]:
        clauses, params = [], []
        for column, value in (("label", label), ("domain", domain), ("split", split)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as conn:
            seqs = np.array(event_log.sample_seqs(conn, where, params), dtype=np.int64)
            if len(seqs) > n:
                seqs = np.sort(np.random.default_rng(seed).choice(seqs, size=n, replace=False))
            return event_log.events_by_seq(conn, [int(s) for s in seqs])

    def iter_events(self) -> Iterator[StoredEvent]:
        with self._read() as conn:  # materialised: the lock is not held while the caller iterates
            rows = event_log.all_events(conn)
        yield from rows

    def iter_labelled(self, *, since: int = 0, until: int | None = None, split: str | None = None) -> Iterator[StoredEvent]:
        with self._read() as conn:
            rows = event_log.labelled_events(conn, since, until, split)
        yield from rows

    def export_jsonl(self, out: IO[str], *, labelled_only: bool = False) -> int:
        count = 0
        for stored in self.iter_labelled() if labelled_only else self.iter_events():
            out.write(json.dumps(stored.event.to_json(self.label_names), ensure_ascii=False) + "\n")
            count += 1
        return count

    def label_counts(self) -> tuple[int, int]:
        """(stored events awaiting a label, label events awaiting their event): the gauges, cheaply."""
        with self._read() as conn:
            return event_log.label_counts(conn, self.dialect)

    def stats(self) -> BufferStats:
        with self._read() as conn:
            return event_log.read_stats(conn, self.dialect, self.label_names)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


class SQLBufferReader:
    """A read-only view (``BufferReader``): stats and dictionary rows, safe while daemons write."""

    def __init__(self, dialect: Dialect, label_names: Sequence[str]) -> None:
        self.dialect = dialect
        self.conn = dialect.connect(readonly=True)
        self.label_names = list(label_names)

    def stats(self) -> BufferStats:
        return event_log.read_stats(self.conn, self.dialect, self.label_names)

    def word(self, word: str) -> tuple[WordEntry | None, PendingWord | None]:
        return dictionary_rows.word(self.conn, word)

    def words(self) -> dict[str, WordEntry]:
        return dictionary_rows.words(self.conn)

    def close(self) -> None:
        _close_quietly(self.conn)


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:
        pass  # closing a broken connection: nothing left to release
