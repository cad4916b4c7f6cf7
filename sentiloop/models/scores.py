"""Champion scores kept per model version: a text is scored by a champion once, whoever needs it.

The daemon's drift monitor scores every labelled event with the champion as it arrives; a retrain
needs the same numbers again (refining the new feedback in its first iteration, the champion's side
of the gate, the golden set every retrain of that champion is judged on). They are kept in
``data_dir/scores.sqlite`` as (model version, 128-bit hash of the text) → the ensemble's probabilities
(float64, so a cached score is the computed one, bit for bit). WAL mode: the daemon writes while a
worker reads. It is a cache of derived data: if it cannot be read or written (locked, disk full,
damaged) the scores are computed and the failure logged, never raised.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from sentiloop.config import Settings

log = logging.getLogger(__name__)

FILE_NAME = "scores.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS scores (
    version INTEGER NOT NULL, text_key BLOB NOT NULL, probabilities BLOB NOT NULL,
    PRIMARY KEY (version, text_key)) WITHOUT ROWID"""
_CHUNK = 500  # keys per IN (...) query, under SQLite's variable limit


class Scorer(Protocol):
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class ScoreStore:
    """Probabilities by (champion version, text); safe to share between threads of one process."""

    def __init__(self, path: Path, num_classes: int) -> None:
        self.path = Path(path)
        self.num_classes = num_classes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> ScoreStore:
        return cls(settings.data_dir / FILE_NAME, len(settings.labels))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # derived data: losing the last writes to a crash costs a recomputation
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def get(self, version: int, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Row index → cached probabilities for those of ``texts`` that ``version`` has scored."""
        keys = [text_key(t) for t in texts]
        rows: dict[bytes, bytes] = {}
        try:
            with self._lock:
                db = self._connection()
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    query = f"SELECT text_key, probabilities FROM scores WHERE version = ? AND text_key IN ({','.join('?' * len(chunk))})"
                    rows.update(db.execute(query, (version, *chunk)).fetchall())
        except sqlite3.Error as exc:
            log.warning("score cache %s unreadable (%s): scoring instead", self.path, exc)
            return {}
        found = {}
        for i, key in enumerate(keys):
            blob = rows.get(key)
            if blob is not None and len(blob) == 8 * self.num_classes:
                found[i] = np.frombuffer(blob, dtype=np.float64)
        return found

    def put(self, version: int, texts: Sequence[str], probabilities: np.ndarray) -> None:
        """Remember ``version``'s probabilities for ``texts`` (best effort)."""
        values = np.asarray(probabilities, dtype=np.float64)
        if values.shape != (len(texts), self.num_classes):
            raise ValueError(f"probabilities of shape {values.shape} for {len(texts)} texts and {self.num_classes} classes")
        rows = [(version, text_key(t), row.tobytes()) for t, row in zip(texts, values)]
        try:
            with self._lock:
                db = self._connection()
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning("score cache %s not written (%s): the next reader scores again", self.path, exc)
            self._rollback()

    def retain(self, versions: Iterable[int]) -> None:
        """Drop the scores of every version not in ``versions`` (an old champion's are of no more use)."""
        keep = sorted(set(versions))
        try:
            with self._lock:
                self._connection().execute(f"DELETE FROM scores WHERE version NOT IN ({','.join('?' * len(keep))})", keep)
        except sqlite3.Error as exc:
            log.warning("score cache %s not pruned (%s)", self.path, exc)

    def _rollback(self) -> None:
        try:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def champion_proba(scores: ScoreStore | None, version: int | None, champion: Scorer, texts: Sequence[str]) -> np.ndarray:
    """``champion.predict_proba(texts)``, reading what ``version`` already scored and storing the rest."""
    if scores is None or version is None or not len(texts):
        return champion.predict_proba(texts)
    found = scores.get(version, texts)
    missing = [i for i in range(len(texts)) if i not in found]
    result = np.empty((len(texts), scores.num_classes), dtype=np.float64)
    for i, row in found.items():
        result[i] = row
    if missing:
        fresh = champion.predict_proba([texts[i] for i in missing])
        result[missing] = fresh
        scores.put(version, [texts[i] for i in missing], fresh)
    return result
