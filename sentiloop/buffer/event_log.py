"""The event log: events, label events, counters and marks, as SQL both engines run.

Every function takes the connection of a transaction the store opened, so the events of a batch,
the labels they resolve, the counters and the dictionary rows (dictionary_rows.py) commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sentiloop.buffer.dialect import Connection, Dialect
from sentiloop.buffer.store import BatchResult, BufferStats, PendingLabel, SourcedEvent, StoredEvent, holdout_split
from sentiloop.errors import NotInitialised
from sentiloop.events import FeedbackEvent, LabelEvent

EVENT_COLUMNS = "seq, event_id, text, label, predicted_label, model_version, domain, lang, event_ts_ms, ingested_ms, split, label_seq"
CHUNK = 500  # far below both engines' bound-parameter limits; keeps IN (...) lists reasonable


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def row_to_stored(row: Sequence[Any]) -> StoredEvent:
    """A row of ``SELECT {EVENT_COLUMNS}`` as a StoredEvent."""
    seq, event_id, text, label, predicted, version, domain, lang, ts_ms, ingested_ms, split, label_seq = row[:12]
    event = FeedbackEvent(event_id=event_id, text=text, label=label, predicted_label=predicted, model_version=version,
                          domain=domain, lang=lang, ts_ms=ts_ms)
    return StoredEvent(seq=seq, event=event, split=split, ingested_ms=ingested_ms, label_seq=label_seq)


def bump(conn: Connection, name: str, amount: int) -> None:
    if amount:
        conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = counters.value + excluded.value",
                     (name, amount))


def known_ids(conn: Connection, ids: set[str]) -> set[str]:
    """Those of ``ids`` that are stored or retired (an id stays known after retention deletes its event)."""
    known: set[str] = set()
    for chunk in chunks(sorted(ids)):
        marks = placeholders(chunk)
        known.update(row[0] for row in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({marks}) UNION ALL SELECT event_id FROM retired_ids WHERE event_id IN ({marks})",
            chunk + chunk))
    return known


class LabelPositions:
    """The label position counter, read once per transaction and written back at its end."""

    def __init__(self, conn: Connection) -> None:
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


class Batch:
    """One ``append_batch`` inside its transaction: what it inserted, applied and must teach the dictionary."""

    def __init__(self, conn: Connection, dialect: Dialect, holdout_share: float, now_ms: int) -> None:
        self.conn, self.dialect, self.holdout_share, self.now = conn, dialect, holdout_share, now_ms
        self.positions = LabelPositions(conn)
        self.result = BatchResult()
        self.learn: list[tuple[str, int]] = []  # (text, label) of every label applied, in order

    def store(self, records: Sequence[SourcedEvent]) -> None:
        """Insert the events and label events, then apply every pending label whose event is stored."""
        refs = self._insert_events([r for r in records if isinstance(r.event, FeedbackEvent)])
        fresh = self._insert_labels([r for r in records if isinstance(r.event, LabelEvent)])
        refs |= {ref for _, ref in fresh}
        if refs:
            self._apply_pending_labels(refs, {label_id for label_id, _ in fresh})
        self.positions.save()
        bump(self.conn, "duplicates", self.result.duplicates)
        bump(self.conn, "label_corrections", self.result.corrections)

    def _insert_events(self, records: Sequence[SourcedEvent]) -> set[str]:
        """New events, in one statement (a labelled one takes the next label position); returns their ids.

        Which ids are known is asked once per batch: the write transaction serialises writers, so no
        other one can store one of them in between.
        """
        result, now = self.result, self.now
        known = known_ids(self.conn, {r.event.event_id for r in records})
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
                         self.positions.take() if labelled else None, event.ts_ms if labelled else None, now if labelled else None))
            result.inserted.append(event)
            if event.label is not None:
                result.labelled.append(event)
                self.learn.append((event.text, event.label))
        if rows:
            self.conn.executemany(
                'INSERT INTO events (event_id, topic, partition, "offset", text, label, predicted_label, model_version, domain, lang,'
                " event_ts_ms, ingested_ms, split, label_seq, label_ts_ms, labelled_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows)
        return {e.event_id for e in result.inserted}

    def _insert_labels(self, records: Sequence[SourcedEvent]) -> set[tuple[str, str]]:
        """New label events, pending until applied; a label event seen before is a duplicate.
        Returns (label id, ref) of the new ones."""
        fresh: set[tuple[str, str]] = set()
        for record in records:
            label = record.event
            assert isinstance(label, LabelEvent)
            cursor = self.conn.execute(
                'INSERT INTO labels (label_id, ref_event_id, label, label_ts_ms, received_ms, state, topic, partition, "offset")'
                " SELECT ?, ?, ?, ?, ?, 'pending', ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM retired_ids WHERE event_id = ?)"
                " ON CONFLICT DO NOTHING",
                (label.event_id, label.ref_event_id, label.label, label.ts_ms, self.now, record.topic, record.partition,
                 record.offset, label.event_id),
            )
            if cursor.rowcount == 1:
                fresh.add((label.event_id, label.ref_event_id))
            else:
                self.result.duplicates += 1
        return fresh

    def _apply_pending_labels(self, refs: set[str], fresh: set[str]) -> None:
        """Apply the pending labels of every stored event in ``refs``, oldest label ``ts`` first.

        Policy (documented in the README): a label on an unlabelled event is applied; a *different* label
        at least as recent as the event's current one is a correction (it replaces the label for training,
        takes a new label position, the dictionary learns it, it is counted); an older different label is
        superseded without effect; the same label again only confirms. ``fresh``: ids of the label events
        inserted by this batch; those left pending are counted in ``result.labels_pending``.
        """
        conn, result = self.conn, self.result
        if conn.execute("SELECT 1 FROM labels WHERE state = 'pending' LIMIT 1").fetchone() is None:
            result.labels_pending = 0  # the usual case for labelled feedback: nothing waits, nothing to look up
            return
        pending: list[_PendingRow] = []
        for chunk in chunks(sorted(refs)):
            pending.extend(_PendingRow(*row) for row in conn.execute(
                f"SELECT {self.dialect.label_arrival}, label_id, ref_event_id, label, label_ts_ms FROM labels"
                f" WHERE state = 'pending' AND ref_event_id IN ({placeholders(chunk)})", chunk))
        stored: dict[str, _LabelledRow] = {}
        for chunk in chunks(sorted({row.ref for row in pending})):
            stored.update((row.event.event.event_id, row) for row in _labelled_rows(conn, f"event_id IN ({placeholders(chunk)})", chunk))
        for label in sorted(pending, key=lambda r: (r.ts, r.arrival)):
            row = stored.get(label.ref)
            if row is None:
                continue  # its event has not arrived yet: stays pending
            fresh.discard(label.label_id)
            current, current_ts, seq = row.event.event.label, row.label_ts or 0, row.event.seq
            if current is not None and (label.label == current or label.ts < current_ts):
                conn.execute("UPDATE labels SET state = ? WHERE label_id = ?",
                             ("confirmed" if label.label == current else "superseded", label.label_id))
                if label.label == current and label.ts > current_ts:  # the latest word on this event is now this one
                    conn.execute("UPDATE events SET label_ts_ms = ? WHERE seq = ?", (label.ts, seq))
                    stored[label.ref] = row._replace(label_ts=label.ts)
                continue
            conn.execute("UPDATE events SET label = ?, label_seq = ?, label_ts_ms = ?, labelled_ms = ?,"
                         " corrections = corrections + ? WHERE seq = ?",
                         (label.label, self.positions.take(), label.ts, self.now, 0 if current is None else 1, seq))
            if current is not None:
                conn.execute("UPDATE labels SET state = 'superseded' WHERE ref_event_id = ? AND state IN ('applied', 'confirmed')",
                             (label.ref,))
            conn.execute("UPDATE labels SET state = 'applied' WHERE label_id = ?", (label.label_id,))
            updated = _labelled_rows(conn, "seq = ?", [seq])[0]
            stored[label.ref] = updated
            event = updated.event.event
            result.labelled.append(event)
            self.learn.append((event.text, label.label))
            if current is None:
                result.labels_applied += 1
                result.label_delays_ms.append(max(0, label.ts - event.ts_ms))
            else:
                result.corrections += 1
        result.labels_pending = len(fresh)


class _PendingRow(NamedTuple):
    arrival: int
    label_id: str
    ref: str
    label: int
    ts: int


class _LabelledRow(NamedTuple):
    event: StoredEvent
    label_ts: int | None


def _labelled_rows(conn: Connection, where: str, params: Sequence[Any]) -> list[_LabelledRow]:
    rows = conn.execute(f"SELECT {EVENT_COLUMNS}, label_ts_ms FROM events WHERE {where}", params).fetchall()
    return [_LabelledRow(row_to_stored(row), row[12]) for row in rows]


def pending_labels_older_than(conn: Connection, received_before_ms: int, limit: int) -> list[PendingLabel]:
    rows = conn.execute(
        'SELECT label_id, ref_event_id, label, label_ts_ms, received_ms, topic, partition, "offset" FROM labels'
        " WHERE state = 'pending' AND received_ms < ? ORDER BY received_ms LIMIT ?", (received_before_ms, limit)).fetchall()
    return [PendingLabel(LabelEvent(r[0], r[1], r[2], r[3]), r[4], r[5], r[6], r[7]) for r in rows]


def expire_labels(conn: Connection, label_ids: Sequence[str]) -> int:
    expired = 0
    for chunk in chunks(label_ids):
        expired += conn.execute(f"UPDATE labels SET state = 'expired' WHERE state = 'pending' AND label_id IN ({placeholders(chunk)})",
                                chunk).rowcount
    bump(conn, "labels_expired", expired)
    return expired


def set_mark(conn: Connection, mark: str, label_seq: int | None, now_ms: int) -> None:
    if label_seq is None:
        label_seq = LabelPositions(conn).last
    conn.execute("INSERT INTO marks VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, set_ms = excluded.set_ms",
                 (mark, label_seq, now_ms))


def mark_seq(conn: Connection, mark: str) -> int:
    row = conn.execute("SELECT seq FROM marks WHERE name = ?", (mark,)).fetchone()
    return int(row[0]) if row else 0


def count_after(conn: Connection, label_seq: int) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM events WHERE label_seq > ?", (label_seq,)).fetchone()[0])


def apply_retention(conn: Connection, cutoff_ms: int) -> int:
    """Delete events ingested before ``cutoff_ms``; label events go with their event (or, expired, by
    age); every id deleted stays in ``retired_ids`` so a redelivery is still a duplicate."""
    retiring = ("FROM labels WHERE (state != 'pending' AND ref_event_id IN (SELECT event_id FROM events WHERE ingested_ms < ?))"
                " OR (state = 'expired' AND received_ms < ?)")
    conn.execute(f"INSERT INTO retired_ids SELECT label_id {retiring} ON CONFLICT DO NOTHING", (cutoff_ms, cutoff_ms))
    conn.execute(f"DELETE {retiring}", (cutoff_ms, cutoff_ms))
    conn.execute("INSERT INTO retired_ids SELECT event_id FROM events WHERE ingested_ms < ? ON CONFLICT DO NOTHING", (cutoff_ms,))
    return conn.execute("DELETE FROM events WHERE ingested_ms < ?", (cutoff_ms,)).rowcount


def sample_seqs(conn: Connection, where: str, params: Sequence[Any]) -> list[int]:
    return [int(r[0]) for r in conn.execute(f"SELECT seq FROM events{where}", params)]


def events_by_seq(conn: Connection, seqs: Sequence[int]) -> list[StoredEvent]:
    chosen: list[StoredEvent] = []
    for chunk in chunks(seqs):
        rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({placeholders(chunk)}) ORDER BY seq", chunk)
        chosen.extend(row_to_stored(row) for row in rows)
    return chosen


def all_events(conn: Connection) -> list[StoredEvent]:
    return [row_to_stored(row) for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq").fetchall()]


def labelled_events(conn: Connection, since: int, until: int | None, split: str | None) -> list[StoredEvent]:
    query = f"SELECT {EVENT_COLUMNS} FROM events WHERE label_seq > ?"
    params: list[object] = [since]
    if until is not None:
        query += " AND label_seq <= ?"
        params.append(until)
    if split is not None:
        query += " AND split = ?"
        params.append(split)
    return [row_to_stored(row) for row in conn.execute(query + " ORDER BY label_seq", params).fetchall()]


def label_counts(conn: Connection, dialect: Dialect) -> tuple[int, int]:
    awaiting = int(conn.execute("SELECT COUNT(*) FROM events WHERE label IS NULL").fetchone()[0])
    return awaiting, _pending_labels(conn, dialect)


def read_stats(conn: Connection, dialect: Dialect, label_names: Sequence[str]) -> BufferStats:
    """Counts from any connection (also a read-only one, while the daemon writes)."""
    if not dialect.has_table(conn, "counters"):
        raise NotInitialised("the buffer exists but is not initialised yet (the daemon is starting); try again")
    counters = {r[0]: int(r[1]) for r in conn.execute("SELECT name, value FROM counters")}
    per_label = {name: 0 for name in label_names}
    for label, count in conn.execute("SELECT label, COUNT(*) FROM events WHERE label IS NOT NULL GROUP BY label"):
        per_label[label_names[label]] = int(count)
    per_domain = {(domain or "(none)"): int(count) for domain, count in conn.execute("SELECT domain, COUNT(*) FROM events GROUP BY domain")}
    awaiting, pending = label_counts(conn, dialect)
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
        events_awaiting_label=awaiting,
        labels_pending=pending,
        labels_expired=counters.get("labels_expired", 0),
        label_corrections=counters.get("label_corrections", 0),
    )


def _pending_labels(conn: Connection, dialect: Dialect) -> int:
    """Label events waiting for their event (0 on a buffer not yet migrated, read by `sentiloop status`)."""
    if not dialect.has_table(conn, "labels"):
        return 0
    return int(conn.execute("SELECT COUNT(*) FROM labels WHERE state = 'pending'").fetchone()[0])
