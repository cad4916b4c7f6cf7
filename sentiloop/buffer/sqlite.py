"""SQLite (WAL) implementation of the BufferStore, holding the dictionary's durable state too.

Why the dictionary lives here: an event insert and the dictionary update it causes must commit in
ONE transaction, so a redelivered event (already in ``events``) can never update a word twice.
The in-memory ``WordSentimentModel`` is a cache: inside each write transaction the rows of the
words about to change are re-read, so several processes sharing one file stay exact.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from sentiloop.buffer.store import BatchResult, BufferStats, PendingLabel, SourcedEvent, StoredEvent, holdout_split
from sentiloop.errors import BufferFileError, ConfigError, NotInitialised, StorageUnavailable
from sentiloop.events import FeedbackEvent, LabelEvent
from sentiloop.models.word_sentiment import PendingWord, WordEntry, WordSentimentModel

if TYPE_CHECKING:
    from sentiloop.config import DictionaryConfig, Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    text TEXT NOT NULL,
    label INTEGER,
    predicted_label INTEGER,
    model_version TEXT,
    domain TEXT,
    lang TEXT,
    event_ts_ms INTEGER NOT NULL,
    ingested_ms INTEGER NOT NULL,
    split TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_label ON events(label);
CREATE INDEX IF NOT EXISTS events_domain ON events(domain);
CREATE INDEX IF NOT EXISTS events_ingested ON events(ingested_ms);
CREATE TABLE IF NOT EXISTS retired_ids (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, set_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dict_words (word TEXT PRIMARY KEY, score REAL NOT NULL, updates INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dict_pending (word TEXT PRIMARY KEY, count INTEGER NOT NULL, total REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
# Versioned migrations, applied in order inside one transaction at open; meta 'schema_version' says
# which ran. The base schema above is version 1 (buffers written before migrations existed).
MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE events ADD COLUMN label_seq INTEGER;
ALTER TABLE events ADD COLUMN label_ts_ms INTEGER;
ALTER TABLE events ADD COLUMN labelled_ms INTEGER;
ALTER TABLE events ADD COLUMN corrections INTEGER NOT NULL DEFAULT 0;
UPDATE events SET label_seq = seq, label_ts_ms = event_ts_ms, labelled_ms = ingested_ms WHERE label IS NOT NULL;
CREATE UNIQUE INDEX events_label_seq ON events(label_seq);
CREATE TABLE labels (
    label_id TEXT PRIMARY KEY,
    ref_event_id TEXT NOT NULL,
    label INTEGER NOT NULL,
    label_ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL
);
CREATE INDEX labels_pending ON labels(state, ref_event_id);
INSERT INTO counters SELECT 'label_seq', COALESCE(MAX(seq), 0) FROM events WHERE 1 ON CONFLICT(name) DO NOTHING;
""",
}
SCHEMA_VERSION = max(MIGRATIONS)
_EVENT_COLUMNS = "seq, event_id, text, label, predicted_label, model_version, domain, lang, event_ts_ms, ingested_ms, split, label_seq"
_CHUNK = 500  # SQLite's bound-parameter limit is far above this; keeps IN (...) lists reasonable.


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list[str], size: int = _CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_to_stored(row: sqlite3.Row) -> StoredEvent:
    event = FeedbackEvent(
        event_id=row["event_id"],
        text=row["text"],
        label=row["label"],
        predicted_label=row["predicted_label"],
        model_version=row["model_version"],
        domain=row["domain"],
        lang=row["lang"],
        ts_ms=row["event_ts_ms"],
    )
    return StoredEvent(seq=row["seq"], event=event, split=row["split"], ingested_ms=row["ingested_ms"], label_seq=row["label_seq"])


def _known_ids(conn: sqlite3.Connection, ids: set[str]) -> set[str]:
    """Those of ``ids`` that are stored or retired (an id stays known after retention deletes its event)."""
    known: set[str] = set()
    for chunk in _chunks(sorted(ids)):
        marks = ",".join("?" * len(chunk))
        known.update(row[0] for row in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({marks}) UNION ALL SELECT event_id FROM retired_ids WHERE event_id IN ({marks})",
            chunk + chunk))
    return known


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION (call inside a write transaction); refuse a newer buffer."""
    version = _schema_version(conn)
    if version > SCHEMA_VERSION:
        raise BufferFileError(f"{path} has buffer schema {version}, newer than this sentiloop's {SCHEMA_VERSION}: "
                              "upgrade sentiloop, or use another data_dir")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target].split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (str(target),))


class _LabelPositions:
    """The label position counter, read once per transaction and written back at its end."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        row = conn.execute("SELECT value FROM counters WHERE name = 'label_seq'").fetchone()
        self.last = self.saved = int(row[0]) if row else 0

    def take(self) -> int:
        self.last += 1
        return self.last

    def save(self) -> None:
        if self.last != self.saved:
            self.conn.execute("INSERT INTO counters VALUES ('label_seq', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                              (self.last,))
            self.saved = self.last


def _apply_pending_labels(conn: sqlite3.Connection, refs: set[str], fresh: set[str], positions: _LabelPositions,
                          result: BatchResult, learn: list[tuple[str, int]], now: int) -> None:
    """Apply the pending labels of every stored event in ``refs``, oldest label ``ts`` first.

    Policy (documented in the README): a label on an unlabelled event is applied; a *different* label
    at least as recent as the event's current one is a correction (it replaces the label for training,
    takes a new label position, the dictionary learns it, it is counted); an older different label is
    superseded without effect; the same label again only confirms. ``fresh``: ids of the label events
    inserted by this batch; those left pending are counted in ``result.labels_pending``.
    """
    if conn.execute("SELECT 1 FROM labels WHERE state = 'pending' LIMIT 1").fetchone() is None:
        result.labels_pending = 0  # the usual case for labelled feedback: nothing waits, nothing to look up
        return
    pending: list[sqlite3.Row] = []
    for chunk in _chunks(sorted(refs)):
        marks = ",".join("?" * len(chunk))
        pending.extend(conn.execute(f"SELECT rowid, label_id, ref_event_id, label, label_ts_ms FROM labels"
                                    f" WHERE state = 'pending' AND ref_event_id IN ({marks})", chunk))
    stored: dict[str, sqlite3.Row] = {}
    for chunk in _chunks(sorted({row["ref_event_id"] for row in pending})):
        marks = ",".join("?" * len(chunk))
        stored.update((row["event_id"], row) for row in conn.execute(
            f"SELECT {_EVENT_COLUMNS}, label_ts_ms FROM events WHERE event_id IN ({marks})", chunk))
    for label in sorted(pending, key=lambda r: (r["label_ts_ms"], r["rowid"])):
        row = stored.get(label["ref_event_id"])
        if row is None:
            continue  # its event has not arrived yet: stays pending
        fresh.discard(label["label_id"])
        new_label, label_ts = int(label["label"]), int(label["label_ts_ms"])
        current, current_ts = row["label"], row["label_ts_ms"]
        if current is not None and (new_label == current or label_ts < current_ts):
            state = "confirmed" if new_label == current else "superseded"
            conn.execute("UPDATE labels SET state = ? WHERE label_id = ?", (state, label["label_id"]))
            if new_label == current and label_ts > current_ts:  # the latest word on this event is now this one
                conn.execute("UPDATE events SET label_ts_ms = ? WHERE seq = ?", (label_ts, row["seq"]))
                stored[row["event_id"]] = _event_row(conn, row["seq"])
            continue
        conn.execute("UPDATE events SET label = ?, label_seq = ?, label_ts_ms = ?, labelled_ms = ?,"
                     " corrections = corrections + ? WHERE seq = ?",
                     (new_label, positions.take(), label_ts, now, 0 if current is None else 1, row["seq"]))
        if current is not None:
            conn.execute("UPDATE labels SET state = 'superseded' WHERE ref_event_id = ? AND state IN ('applied', 'confirmed')",
                         (row["event_id"],))
        conn.execute("UPDATE labels SET state = 'applied' WHERE label_id = ?", (label["label_id"],))
        updated = _event_row(conn, row["seq"])
        stored[row["event_id"]] = updated
        event = _row_to_stored(updated).event
        result.labelled.append(event)
        learn.append((event.text, new_label))
        if current is None:
            result.labels_applied += 1
            result.label_delays_ms.append(max(0, label_ts - event.ts_ms))
        else:
            result.corrections += 1
    result.labels_pending = len(fresh)


def _event_row(conn: sqlite3.Connection, seq: int) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute(f"SELECT {_EVENT_COLUMNS}, label_ts_ms FROM events WHERE seq = ?", (seq,)).fetchone()
    return row


# SQLite result codes that mean "the storage cannot take writes now", by metric label. Anything
# else (a constraint, a value SQLite cannot bind) is about one record, not about the store.
_UNAVAILABLE_CODES = {
    "SQLITE_FULL": "disk_full",
    "SQLITE_READONLY": "read_only",
    "SQLITE_PERM": "read_only",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_PROTOCOL": "locked",
    "SQLITE_IOERR": "io_error",
    "SQLITE_CANTOPEN": "cant_open",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
}
_OS_KINDS = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only", errno.EACCES: "read_only",
             errno.EPERM: "read_only"}


def storage_failure(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` amounts to, or None when it is not a storage failure.

    Generic ``OperationalError``/``DatabaseError`` count as storage failures even without a known code:
    pausing and retrying is safe, while calling them a bad record would send good events to the DLQ.
    """
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, OSError):
        return StorageUnavailable(_OS_KINDS.get(exc.errno or 0, "io_error"), str(exc))
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    base = "_".join(name.split("_")[:2])
    return StorageUnavailable(_UNAVAILABLE_CODES.get(base, "sqlite_error"), f"{exc} ({name or 'no result code'})")


def _not_a_buffer(path: Path, exc: sqlite3.DatabaseError) -> BufferFileError:
    return BufferFileError(
        f"{path} is not a usable sentiloop buffer (SQLite: {exc}). If data_dir points at the wrong place, fix "
        f"data_dir; if this is a damaged buffer, move it aside (mv {path} {path}.damaged; also its -wal/-shm files) "
        "and start again: sentiloop creates a new buffer, and `sqlite3 FILE .recover` may rescue the old events."
    )


def _connect(path: Path, readonly: bool = False, lock_timeout_s: float = 10.0) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=lock_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise storage_failure(exc) or exc from None
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}")
    return conn


def _is_not_a_database(exc: sqlite3.Error) -> bool:
    return str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))


class SQLiteBufferStore:
    """Buffer + dictionary state in one SQLite file; one transaction per poll batch.

    Failure contract (what the consumer builds on): a write that cannot reach the disk raises
    :class:`StorageUnavailable` and leaves nothing half-done — the transaction is rolled back, the
    connection is dropped (the next call reopens it, so a file made writable again is seen), and the
    in-memory dictionary is re-read from the committed rows before it is used again. Any other
    exception from ``append_batch`` comes from the records themselves and is re-raised unchanged.
    """

    def __init__(
        self,
        path: Path,
        label_names: Sequence[str],
        dictionary: WordSentimentModel | None = None,
        holdout_share: float = 0.1,
        retention_days: float | None = None,
        synchronous: str = "FULL",
        lock_timeout_s: float = 10.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.label_names = list(label_names)
        self.dictionary = dictionary
        self.holdout_share = holdout_share
        self.retention_days = retention_days
        self.synchronous = synchronous
        self.lock_timeout_s = lock_timeout_s
        self._lock = threading.RLock()  # one connection, shared by the poll and controller threads
        self._conn: sqlite3.Connection | None = None
        self._dictionary_stale = False
        self._connection()
        self._check_labels()
        if dictionary is not None:
            self.reload_dictionary()

    @classmethod
    def for_settings(cls, settings: Settings, dictionary: WordSentimentModel | None = None) -> SQLiteBufferStore:
        """The buffer under ``data_dir`` opened with the ``buffer.*`` settings (daemon and retrain worker alike)."""
        b = settings.buffer
        return cls(settings.db_path, settings.label_names, dictionary, holdout_share=b.holdout_share,
                   retention_days=b.retention_days, synchronous=b.synchronous, lock_timeout_s=b.lock_timeout_s)

    # -- connection and transactions -----------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The open connection, (re)opened on demand: after an outage the file may be writable again."""
        if self._conn is not None:
            return self._conn
        conn = _connect(self.path, lock_timeout_s=self.lock_timeout_s)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a batch whose offsets are committed in Kafka
            # survives a power loss too (NORMAL survives only a process crash).
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}")  # one transaction: readers never see half a schema
            _migrate(conn, self.path)
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, BufferFileError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            if isinstance(exc, BufferFileError):
                raise
            if _is_not_a_database(exc):
                raise _not_a_buffer(self.path, exc) from None
            raise storage_failure(exc) or exc from None
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.DatabaseError as exc:
                failure = storage_failure(exc)
                if failure is None:
                    raise
                self._drop_connection()
                raise failure from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so concurrent writers serialise cleanly."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                if self._dictionary_stale and self.dictionary is not None:
                    self._load_dictionary(conn)  # a failed write left uncommitted updates in memory
                yield conn
                conn.execute("COMMIT")  # may fail too (disk full at commit): handled below like the rest
            except BaseException as exc:
                self._abort(conn)
                failure = storage_failure(exc)
                if failure is None:
                    raise
                self._drop_connection()
                raise failure from exc

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Roll back, and bring the in-memory dictionary back to the committed rows (or mark it stale)."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # a connection that cannot roll back is dropped; SQLite discards the open transaction
        if self.dictionary is not None:
            self._dictionary_stale = True
            try:
                self._load_dictionary(conn)
            except sqlite3.Error:
                pass  # stays stale: re-read inside the next write transaction

    def _check_labels(self) -> None:
        """Refuse to reuse a buffer written with another label set: indices would change meaning."""
        with self._read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key='labels'").fetchone()
        if stored is None:
            with self._write() as conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('labels', ?)", (json.dumps(self.label_names),))
        elif json.loads(stored["value"]) != self.label_names:
            raise ConfigError(
                f"buffer {self.path} was written with labels {json.loads(stored['value'])}, "
                f"but the config has {self.label_names}; use another data_dir or the original labels"
            )

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, amount: int) -> None:
        if amount:
            conn.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, amount),
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
        """The dictionary as committed (what a snapshot may show); re-read first if a write failed."""
        assert self.dictionary is not None
        with self._lock:
            if self._dictionary_stale:
                self.reload_dictionary()
            return self.dictionary

    def _load_dictionary(self, conn: sqlite3.Connection) -> None:
        assert self.dictionary is not None
        words = {r[0]: WordEntry(r[1], r[2]) for r in conn.execute("SELECT word, score, updates FROM dict_words")}
        pending = {r[0]: PendingWord(r[1], r[2]) for r in conn.execute("SELECT word, count, total FROM dict_pending")}
        self.dictionary.load_state(words, pending)
        self._dictionary_stale = False

    def _refresh_words(self, conn: sqlite3.Connection, words: set[str]) -> None:
        """Re-read the committed rows of ``words`` (another process may have changed them)."""
        model = self.dictionary
        assert model is not None
        wanted = sorted(words)
        for word in wanted:
            model.words.pop(word, None)
            model.pending.pop(word, None)
        for chunk in _chunks(wanted):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT word, score, updates FROM dict_words WHERE word IN ({marks})", chunk):
                model.words[row[0]] = WordEntry(row[1], row[2])
            for row in conn.execute(f"SELECT word, count, total FROM dict_pending WHERE word IN ({marks})", chunk):
                model.pending[row[0]] = PendingWord(row[1], row[2])

    def _write_dictionary_changes(self, conn: sqlite3.Connection) -> None:
        model = self.dictionary
        assert model is not None
        changes = model.changes
        conn.executemany(
            "INSERT INTO dict_words VALUES (?, ?, ?) ON CONFLICT(word) DO UPDATE SET score=excluded.score, updates=excluded.updates",
            [(w, model.words[w].score, model.words[w].updates) for w in changes.words],
        )
        gone = [w for w in changes.pending if w not in model.pending]
        conn.executemany("DELETE FROM dict_pending WHERE word = ?", [(w,) for w in gone])
        conn.executemany(
            "INSERT INTO dict_pending VALUES (?, ?, ?) ON CONFLICT(word) DO UPDATE SET count=excluded.count, total=excluded.total",
            [(w, model.pending[w].count, model.pending[w].total) for w in changes.pending if w in model.pending],
        )
        changes.clear()

    def seed_dictionary(self, lexicon: Mapping[str, float], source: str) -> int:
        """Bootstrap words from a seed lexicon once per buffer (recorded in meta)."""
        assert self.dictionary is not None
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM meta WHERE key = ?", (f"seeded:{source}",)).fetchone():
                return 0
            self._refresh_words(conn, set(lexicon))
            added = self.dictionary.seed(dict(lexicon))
            self._write_dictionary_changes(conn)
            conn.execute("INSERT INTO meta VALUES (?, ?)", (f"seeded:{source}", str(added)))
        return added

    # -- writes --------------------------------------------------------------------------------
    def append_batch(self, records: Sequence[SourcedEvent], invalid: Mapping[str, int] | None = None) -> BatchResult:
        """Insert new events and label events, apply every label whose event is stored, update the
        dictionary for each label applied, count the rest: one transaction."""
        result = BatchResult()
        now = _now_ms()
        with self._write() as conn:
            positions = _LabelPositions(conn)
            learn: list[tuple[str, int]] = []
            refs = self._insert_events(conn, [r for r in records if isinstance(r.event, FeedbackEvent)], positions, result, learn, now)
            fresh = self._insert_labels(conn, [r for r in records if isinstance(r.event, LabelEvent)], result, now)
            refs |= {ref for _, ref in fresh}
            if refs:
                _apply_pending_labels(conn, refs, {label_id for label_id, _ in fresh}, positions, result, learn, now)
            positions.save()
            self._learn(conn, learn)
            result.dictionary_updates = len(learn) if self.dictionary is not None else 0
            self._bump(conn, "duplicates", result.duplicates)
            self._bump(conn, "label_corrections", result.corrections)
            for reason, count in (invalid or {}).items():
                self._bump(conn, f"invalid:{reason}", count)
        return result

    def _insert_events(self, conn: sqlite3.Connection, records: Sequence[SourcedEvent], positions: _LabelPositions,
                       result: BatchResult, learn: list[tuple[str, int]], now: int) -> set[str]:
        """New events, in one statement (a labelled one takes the next label position); returns their ids.

        Which ids are known (stored, or retired by retention) is asked once per batch; the write lock
        (BEGIN IMMEDIATE) is held, so no other writer can store one of them in between.
        """
        known = _known_ids(conn, {r.event.event_id for r in records})
        rows = []
        for record in records:
            event = record.event
            assert isinstance(event, FeedbackEvent)
            if event.event_id in known:  # stored before, or earlier in this batch
                result.duplicates += 1
                continue
            known.add(event.event_id)
            labelled = event.label is not None
            rows.append((event.event_id, record.topic, record.partition, record.offset, event.text, event.label, event.predicted_label,
                         event.model_version, event.domain, event.lang, event.ts_ms, now, holdout_split(event.event_id, self.holdout_share),
                         positions.take() if labelled else None, event.ts_ms if labelled else None, now if labelled else None))
            result.inserted.append(event)
            if event.label is not None:
                result.labelled.append(event)
                learn.append((event.text, event.label))
        conn.executemany(
            "INSERT INTO events (event_id, topic, partition, offset, text, label, predicted_label, model_version, domain, lang,"
            " event_ts_ms, ingested_ms, split, label_seq, label_ts_ms, labelled_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows)
        return {e.event_id for e in result.inserted}

    @staticmethod
    def _insert_labels(conn: sqlite3.Connection, records: Sequence[SourcedEvent], result: BatchResult,
                       now: int) -> set[tuple[str, str]]:
        """New label events, pending until applied; a label event seen before is a duplicate.
        Returns (label id, ref) of the new ones."""
        fresh: set[tuple[str, str]] = set()
        for record in records:
            label = record.event
            assert isinstance(label, LabelEvent)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO labels (label_id, ref_event_id, label, label_ts_ms, received_ms, state, topic, partition, offset)"
                " SELECT ?, ?, ?, ?, ?, 'pending', ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM retired_ids WHERE event_id = ?)",
                (label.event_id, label.ref_event_id, label.label, label.ts_ms, now, record.topic, record.partition,
                 record.offset, label.event_id),
            )
            if cursor.rowcount == 1:
                fresh.add((label.event_id, label.ref_event_id))
            else:
                result.duplicates += 1
        return fresh

    def _learn(self, conn: sqlite3.Connection, learn: Sequence[tuple[str, int]]) -> None:
        """The dictionary learns each applied label once, in the order they were applied."""
        if self.dictionary is None or not learn:
            return
        tokens = [set(self.dictionary.tokenize(text)) for text, _ in learn]
        self._refresh_words(conn, set().union(*tokens))
        for words, (_, label) in zip(tokens, learn):
            self.dictionary.learn_tokens(words, label)
        self._write_dictionary_changes(conn)
        self._bump(conn, "dictionary_updates", len(learn))

    def pending_labels_older_than(self, received_before_ms: int, limit: int = 1000) -> list[PendingLabel]:
        """Label events still waiting for their event, received before ``received_before_ms`` (oldest first)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT label_id, ref_event_id, label, label_ts_ms, received_ms, topic, partition, offset FROM labels"
                " WHERE state = 'pending' AND received_ms < ? ORDER BY received_ms LIMIT ?", (received_before_ms, limit)).fetchall()
        return [PendingLabel(LabelEvent(r[0], r[1], r[2], r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def expire_labels(self, label_ids: Sequence[str]) -> int:
        """Mark pending labels expired (after the DLQ acknowledged them); a label applied meanwhile stays applied."""
        with self._write() as conn:
            expired = 0
            for chunk in _chunks(list(label_ids)):
                marks = ",".join("?" * len(chunk))
                expired += conn.execute(f"UPDATE labels SET state = 'expired' WHERE state = 'pending' AND label_id IN ({marks})",
                                        chunk).rowcount
            self._bump(conn, "labels_expired", expired)
        return expired

    def set_mark(self, mark: str, label_seq: int | None = None) -> None:
        """Remember a label position (default: the newest) under ``mark``."""
        with self._write() as conn:
            if label_seq is None:
                label_seq = _LabelPositions(conn).last
            conn.execute(
                "INSERT INTO marks VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, set_ms = excluded.set_ms",
                (mark, label_seq, _now_ms()),
            )

    def label_position(self) -> int:
        """The newest label position: marks and retrain windows are in these units (see StoredEvent)."""
        with self._read() as conn:
            return _LabelPositions(conn).last

    def apply_retention(self, now_ms: int | None = None) -> int:
        if self.retention_days is None:
            return 0
        cutoff = (now_ms if now_ms is not None else _now_ms()) - int(self.retention_days * 86_400_000)
        with self._write() as conn:  # label events go with their event (or, expired, by age); their ids stay duplicates
            retiring = ("FROM labels WHERE (state != 'pending' AND ref_event_id IN (SELECT event_id FROM events WHERE ingested_ms < ?))"
                        " OR (state = 'expired' AND received_ms < ?)")
            conn.execute(f"INSERT OR IGNORE INTO retired_ids SELECT label_id {retiring}", (cutoff, cutoff))
            conn.execute(f"DELETE {retiring}", (cutoff, cutoff))
            conn.execute("INSERT OR IGNORE INTO retired_ids SELECT event_id FROM events WHERE ingested_ms < ?", (cutoff,))
            return conn.execute("DELETE FROM events WHERE ingested_ms < ?", (cutoff,)).rowcount

    # -- reads ---------------------------------------------------------------------------------
    def mark_seq(self, mark: str) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT seq FROM marks WHERE name = ?", (mark,)).fetchone()
        return int(row[0]) if row else 0

    def count_since(self, mark: str) -> int:
        return self.count_after(self.mark_seq(mark))

    def count_after(self, label_seq: int) -> int:
        """Labelled events whose label matured after position ``label_seq``."""
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events WHERE label_seq > ?", (label_seq,)).fetchone()[0])

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
            seqs = np.array([r[0] for r in conn.execute(f"SELECT seq FROM events{where}", params)], dtype=np.int64)
            if len(seqs) > n:
                seqs = np.sort(np.random.default_rng(seed).choice(seqs, size=n, replace=False))
            chosen: list[StoredEvent] = []
            for chunk in _chunks([str(s) for s in seqs]):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({marks}) ORDER BY seq", chunk)
                chosen.extend(_row_to_stored(row) for row in rows)
        return chosen

    def iter_events(self) -> Iterator[StoredEvent]:
        with self._read() as conn:  # materialised: the lock is not held while the caller iterates
            rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq").fetchall()
        for row in rows:
            yield _row_to_stored(row)

    def iter_labelled(self, *, since: int = 0, until: int | None = None, split: str | None = None) -> Iterator[StoredEvent]:
        query = f"SELECT {_EVENT_COLUMNS} FROM events WHERE label_seq > ?"
        params: list[object] = [since]
        if until is not None:
            query += " AND label_seq <= ?"
            params.append(until)
        if split is not None:
            query += " AND split = ?"
            params.append(split)
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY label_seq", params).fetchall()
        for row in rows:
            yield _row_to_stored(row)

    def export_jsonl(self, out: IO[str], *, labelled_only: bool = False) -> int:
        count = 0
        for stored in self.iter_labelled() if labelled_only else self.iter_events():
            out.write(json.dumps(stored.event.to_json(self.label_names), ensure_ascii=False) + "\n")
            count += 1
        return count

    def label_counts(self) -> tuple[int, int]:
        """(stored events awaiting a label, label events awaiting their event): the gauges, cheaply."""
        with self._read() as conn:
            awaiting = int(conn.execute("SELECT COUNT(*) FROM events WHERE label IS NULL").fetchone()[0])
            return awaiting, _pending_labels(conn)

    def stats(self) -> BufferStats:
        with self._read() as conn:
            return read_stats(conn, self.label_names)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


def read_stats(conn: sqlite3.Connection, label_names: Sequence[str]) -> BufferStats:
    """Counts from any connection (also a read-only one, while the daemon writes)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='counters'").fetchone() is None:
        raise NotInitialised("the buffer exists but is not initialised yet (the daemon is starting); try again")
    counters = {r[0]: r[1] for r in conn.execute("SELECT name, value FROM counters")}
    per_label = {name: 0 for name in label_names}
    for label, count in conn.execute("SELECT label, COUNT(*) FROM events WHERE label IS NOT NULL GROUP BY label"):
        per_label[label_names[label]] = count
    per_domain = {
        (domain or "(none)"): count for domain, count in conn.execute("SELECT domain, COUNT(*) FROM events GROUP BY domain")
    }
    return BufferStats(
        events_stored=int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]),
        events_labelled=sum(per_label.values()),
        events_invalid={k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("invalid:")},
        events_duplicate=counters.get("duplicates", 0),
        per_label=per_label,
        per_domain=per_domain,
        dictionary_words=int(conn.execute("SELECT COUNT(*) FROM dict_words").fetchone()[0]),
        dictionary_pending=int(conn.execute("SELECT COUNT(*) FROM dict_pending").fetchone()[0]),
        dictionary_updates=counters.get("dictionary_updates", 0),
        events_awaiting_label=int(conn.execute("SELECT COUNT(*) FROM events WHERE label IS NULL").fetchone()[0]),
        labels_pending=_pending_labels(conn),
        labels_expired=counters.get("labels_expired", 0),
        label_corrections=counters.get("label_corrections", 0),
    )


def _pending_labels(conn: sqlite3.Connection) -> int:
    """Label events waiting for their event (0 on a buffer not yet migrated, read by `sentiloop status`)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='labels'").fetchone() is None:
        return 0
    return int(conn.execute("SELECT COUNT(*) FROM labels WHERE state = 'pending'").fetchone()[0])


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for `sentiloop status`/`dictionary`, safe while the daemon writes.

    A file that is not a SQLite database is refused here, with what to do, not at the first query.
    """
    if not path.exists():
        raise NotInitialised(f"no buffer at {path}: start the daemon (`sentiloop run`) with this data_dir first")
    conn = _connect(path, readonly=True)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_not_a_database(exc):
            raise _not_a_buffer(path, exc) from None
        raise storage_failure(exc) or exc from None
    return conn


class SQLiteBufferReader:
    """A read-only view of a buffer file (``BufferReader``): stats and dictionary rows, while a daemon writes."""

    def __init__(self, path: Path, label_names: Sequence[str]) -> None:
        self.conn = open_readonly(path)
        self.label_names = list(label_names)

    def stats(self) -> BufferStats:
        return read_stats(self.conn, self.label_names)

    def word(self, word: str) -> tuple[WordEntry | None, PendingWord | None]:
        row = self.conn.execute("SELECT score, updates FROM dict_words WHERE word = ?", (word,)).fetchone()
        seen = self.conn.execute("SELECT count, total FROM dict_pending WHERE word = ?", (word,)).fetchone()
        return (WordEntry(row[0], row[1]) if row else None), (PendingWord(seen[0], seen[1]) if seen else None)

    def words(self) -> dict[str, WordEntry]:
        return {w: WordEntry(s, u) for w, s, u in self.conn.execute("SELECT word, score, updates FROM dict_words ORDER BY word")}

    def close(self) -> None:
        self.conn.close()


def read_stored_labels(conn: sqlite3.Connection) -> list[str]:
    row = conn.execute("SELECT value FROM meta WHERE key='labels'").fetchone()
    return json.loads(row[0]) if row else []
