"""The buffer's schema versions, written once for both engines.

A version's SQL is a template over the few column spellings that differ; ``SQLITE`` and
``POSTGRES`` fill them in. Version 1 is the base schema, 2 adds delayed labels. A migration is
append-only: a buffer at version N runs N+1 … newest, in one transaction (``dialect.migrate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Spelling:
    """How an engine writes what the schema needs."""

    int64: str  # millisecond timestamps, offsets, positions: SQLite INTEGER is 64-bit, PostgreSQL INTEGER is not
    float64: str  # dictionary scores: the same float64 the in-memory dictionary computed (PostgreSQL REAL is 32-bit)
    seq_key: str  # events.seq: increasing with insertion
    keyed: str  # suffix of tables looked up only by their key
    arrival: str  # a label event's arrival order, where the engine has no rowid


SQLITE = Spelling(int64="INTEGER", float64="REAL", seq_key="INTEGER PRIMARY KEY AUTOINCREMENT", keyed=" WITHOUT ROWID", arrival="")
POSTGRES = Spelling(int64="BIGINT", float64="DOUBLE PRECISION", seq_key="BIGSERIAL PRIMARY KEY", keyed="", arrival="arrival BIGSERIAL,\n    ")

_VERSIONS = {
    1: """
CREATE TABLE events (
    seq {seq_key},
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" {int64} NOT NULL,
    text TEXT NOT NULL,
    label INTEGER,
    predicted_label INTEGER,
    model_version TEXT,
    domain TEXT,
    lang TEXT,
    event_ts_ms {int64} NOT NULL,
    ingested_ms {int64} NOT NULL,
    split TEXT NOT NULL
);
CREATE INDEX events_label ON events(label);
CREATE INDEX events_domain ON events(domain);
CREATE INDEX events_ingested ON events(ingested_ms);
CREATE TABLE retired_ids (event_id TEXT PRIMARY KEY){keyed};
CREATE TABLE counters (name TEXT PRIMARY KEY, value {int64} NOT NULL){keyed};
CREATE TABLE marks (name TEXT PRIMARY KEY, seq {int64} NOT NULL, set_ms {int64} NOT NULL){keyed};
CREATE TABLE dict_words (word TEXT PRIMARY KEY, score {float64} NOT NULL, updates {int64} NOT NULL){keyed};
CREATE TABLE dict_pending (word TEXT PRIMARY KEY, count {int64} NOT NULL, total {float64} NOT NULL){keyed};
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL){keyed}
""",
    2: """
ALTER TABLE events ADD COLUMN label_seq {int64};
ALTER TABLE events ADD COLUMN label_ts_ms {int64};
ALTER TABLE events ADD COLUMN labelled_ms {int64};
ALTER TABLE events ADD COLUMN corrections INTEGER NOT NULL DEFAULT 0;
UPDATE events SET label_seq = seq, label_ts_ms = event_ts_ms, labelled_ms = ingested_ms WHERE label IS NOT NULL;
CREATE UNIQUE INDEX events_label_seq ON events(label_seq);
CREATE TABLE labels (
    {arrival}label_id TEXT PRIMARY KEY,
    ref_event_id TEXT NOT NULL,
    label INTEGER NOT NULL,
    label_ts_ms {int64} NOT NULL,
    received_ms {int64} NOT NULL,
    state TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" {int64} NOT NULL
);
CREATE INDEX labels_pending ON labels(state, ref_event_id);
INSERT INTO counters SELECT 'label_seq', COALESCE(MAX(seq), 0) FROM events WHERE true ON CONFLICT (name) DO NOTHING
""",
}


def migrations(spelling: Spelling) -> dict[int, str]:
    """Every schema version's SQL for one engine, by version."""
    return {version: sql.format(**asdict(spelling)) for version, sql in _VERSIONS.items()}
