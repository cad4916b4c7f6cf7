"""The word-sentiment dictionary's durable rows (``dict_words``, ``dict_pending``).

Why they share the event log's transaction: an event insert and the dictionary update it causes
must commit together, so a redelivered event (already stored) can never update a word twice. The
in-memory ``WordSentimentModel`` is a cache: inside each write transaction the rows of the words
about to change are re-read (``refresh``), so several writers — processes on one SQLite file, or
replicas on one PostgreSQL database — stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sentiloop.buffer.dialect import Connection
from sentiloop.buffer.event_log import bump, chunks, placeholders
from sentiloop.models.word_sentiment import PendingWord, WordEntry, WordSentimentModel

WRITE_COUNTERS = ("dictionary_updates", "dictionary_seeded")  # every change to the rows bumps one of them


def writes(conn: Connection) -> int:
    """How many changes the rows have taken, from every writer: a cache that saw this many is current."""
    row = conn.execute("SELECT COALESCE(SUM(value), 0) FROM counters WHERE name IN (?, ?)", WRITE_COUNTERS).fetchone()
    return int(row[0])


def load(conn: Connection, model: WordSentimentModel) -> None:
    """Replace the model's state with every committed row."""
    words = {r[0]: WordEntry(r[1], r[2]) for r in conn.execute("SELECT word, score, updates FROM dict_words")}
    pending = {r[0]: PendingWord(r[1], r[2]) for r in conn.execute("SELECT word, count, total FROM dict_pending")}
    model.load_state(words, pending)


def refresh(conn: Connection, model: WordSentimentModel, words: set[str]) -> None:
    """Re-read the committed rows of ``words`` (another writer may have changed them)."""
    wanted = sorted(words)
    for word in wanted:
        model.words.pop(word, None)
        model.pending.pop(word, None)
    for chunk in chunks(wanted):
        marks = placeholders(chunk)
        for row in conn.execute(f"SELECT word, score, updates FROM dict_words WHERE word IN ({marks})", chunk):
            model.words[row[0]] = WordEntry(row[1], row[2])
        for row in conn.execute(f"SELECT word, count, total FROM dict_pending WHERE word IN ({marks})", chunk):
            model.pending[row[0]] = PendingWord(row[1], row[2])


def write_changes(conn: Connection, model: WordSentimentModel) -> None:
    """Write the rows the model changed since the last write, and forget the change list."""
    changes = model.changes
    conn.executemany(
        "INSERT INTO dict_words VALUES (?, ?, ?) ON CONFLICT(word) DO UPDATE SET score = excluded.score, updates = excluded.updates",
        [(w, model.words[w].score, model.words[w].updates) for w in changes.words],
    )
    gone = [w for w in changes.pending if w not in model.pending]
    conn.executemany("DELETE FROM dict_pending WHERE word = ?", [(w,) for w in gone])
    conn.executemany(
        "INSERT INTO dict_pending VALUES (?, ?, ?) ON CONFLICT(word) DO UPDATE SET count = excluded.count, total = excluded.total",
        [(w, model.pending[w].count, model.pending[w].total) for w in changes.pending if w in model.pending],
    )
    changes.clear()


def tokenized(model: WordSentimentModel, texts: Iterable[str]) -> dict[str, set[str]]:
    """Each text's words, computed before the write transaction: the writers' lock is not held for it."""
    return {text: set(model.tokenize(text)) for text in texts}


def learn(conn: Connection, model: WordSentimentModel, labelled: Sequence[tuple[str, int]],
          known: Mapping[str, set[str]] | None = None) -> None:
    """The dictionary learns each applied label once, in the order they were applied (``known``: texts
    already tokenised; a delayed label's text is tokenised here)."""
    if not labelled:
        return
    known = known or {}
    tokens = [known[text] if text in known else set(model.tokenize(text)) for text, _ in labelled]
    refresh(conn, model, set().union(*tokens))
    for words, (_, label) in zip(tokens, labelled):
        model.learn_tokens(words, label)
    write_changes(conn, model)
    bump(conn, "dictionary_updates", len(labelled))


def seed(conn: Connection, model: WordSentimentModel, lexicon: Mapping[str, float], source: str) -> int:
    """Bootstrap words from a seed lexicon once per buffer (recorded in meta); returns how many were added."""
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (f"seeded:{source}",)).fetchone():
        return 0
    refresh(conn, model, set(lexicon))
    added = model.seed(dict(lexicon))
    write_changes(conn, model)
    bump(conn, "dictionary_seeded", added)
    conn.execute("INSERT INTO meta VALUES (?, ?)", (f"seeded:{source}", str(added)))
    return added


def word(conn: Connection, name: str) -> tuple[WordEntry | None, PendingWord | None]:
    row = conn.execute("SELECT score, updates FROM dict_words WHERE word = ?", (name,)).fetchone()
    seen = conn.execute("SELECT count, total FROM dict_pending WHERE word = ?", (name,)).fetchone()
    return (WordEntry(row[0], row[1]) if row else None), (PendingWord(seen[0], seen[1]) if seen else None)


def words(conn: Connection) -> dict[str, WordEntry]:
    return {w: WordEntry(s, u) for w, s, u in conn.execute("SELECT word, score, updates FROM dict_words ORDER BY word")}
