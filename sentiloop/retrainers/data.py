"""The data a retrain cycle works on, assembled from the buffer and the original dataset.

- new: training-split feedback whose label matured since the last retrain (the refinement pool);
- replay: for a strategic retrain, a class-balanced sample of older data (the original training split,
  then older feedback), ``replay_ratio`` × |new| but at least ``min_replay``, so the warm-started
  members do not forget (see ``replay_sample``); for a ``full`` retrain, all of the older data: a model
  trained from scratch knows only what it is shown, and that is what retraining in full means;
- recent: the newest labelled events of the holdout split (reserved by event_id hash, never trained on);
- golden: a fixed set from the original distribution (the original validation split, less the vote
  fold where the bootstrap fitted its vote there).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentiloop.buffer.store import BufferStore, StoredEvent
from sentiloop.config import Settings
from sentiloop.datasets import Record
from sentiloop.errors import DataError
from sentiloop.models.base import TrainData
from sentiloop.models.vote import VOTE_FOLD, in_vote_fold

log = logging.getLogger(__name__)

RETRAIN_MARK = "last_retrain"


@dataclass
class Pool:
    """Examples with their ids (for fold assignment) and domains."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    domains: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def data(self, mask: np.ndarray | None = None, labels: np.ndarray | None = None, weights: np.ndarray | None = None) -> TrainData:
        mask = np.ones(len(self), dtype=bool) if mask is None else mask
        chosen_labels = (self.labels if labels is None else labels)[mask]
        return TrainData([t for t, m in zip(self.texts, mask) if m], chosen_labels,
                         None if weights is None else weights[mask], [d for d, m in zip(self.domains, mask) if m])

    def subset(self, mask: np.ndarray) -> Pool:
        return Pool([i for i, m in zip(self.ids, mask) if m], [t for t, m in zip(self.texts, mask) if m], self.labels[mask],
                    [d for d, m in zip(self.domains, mask) if m])

    @classmethod
    def from_events(cls, events: Sequence[StoredEvent]) -> Pool:
        return cls([e.event.event_id for e in events], [e.event.text for e in events],
                   np.array([e.event.label for e in events], dtype=np.int64), [e.event.domain or "unknown" for e in events])

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> Pool:
        return cls([r.id for r in records], [r.text for r in records], np.array([r.label for r in records], dtype=np.int64),
                   [r.domain for r in records])

    @classmethod
    def concat(cls, *pools: Pool) -> Pool:
        return cls([i for p in pools for i in p.ids], [t for p in pools for t in p.texts],
                   np.concatenate([p.labels for p in pools]) if pools else np.zeros(0, dtype=np.int64),
                   [d for p in pools for d in p.domains])


@dataclass
class CyclePools:
    new: Pool
    replay: Pool
    recent: Pool
    golden: Pool
    since_seq: int
    until_seq: int
    golden_fixed: bool = False  # the original validation split: the same set for every retrain of a lineage

    def fingerprint(self) -> str:
        """sha256 of every pool's ids and labels: a resumed run must see exactly the pools it started with."""
        digest = hashlib.sha256(f"{self.since_seq}:{self.until_seq}:{self.golden_fixed}".encode())
        for pool in (self.new, self.replay, self.recent, self.golden):
            digest.update(b"\0".join(i.encode() for i in pool.ids) + b"\1" + pool.labels.astype(np.int64).tobytes())
        return digest.hexdigest()

    def summary(self) -> dict[str, int]:
        return {"new": len(self.new), "replay": len(self.replay), "recent_holdout": len(self.recent), "golden": len(self.golden),
                "since_seq": self.since_seq, "until_seq": self.until_seq}


def fold_of(event_id: str, folds: int) -> int:
    """Deterministic fold by id hash (salted differently from the holdout split)."""
    return int.from_bytes(hashlib.blake2b(f"fold:{event_id}".encode(), digest_size=4).digest(), "big") % folds


def replay_sample(pool: Pool, n: int, num_classes: int, seed: int) -> Pool:
    """Up to ``n`` old examples, class-balanced so that nothing the champion knew is crowded out or skewed.

    Each class gets its share of the old data, but at least half an equal share. Equal shares would
    shift the class priors the champion learnt (rare extremes up, frequent classes down), which
    costs the frequent classes several points of recall on the golden set: the gate then refuses a
    challenger that is better overall. The floor keeps a rare class present in every replay.
    """
    counts = np.bincount(pool.labels, minlength=num_classes).astype(float)
    if not counts.sum() or n <= 0:
        return pool.subset(np.zeros(len(pool), dtype=bool))
    shares = np.where(counts > 0, np.maximum(counts / counts.sum(), 0.5 / num_classes), 0.0)
    shares /= shares.sum()
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in range(num_classes):
        indices = np.flatnonzero(pool.labels == c)
        chosen.extend(rng.choice(indices, size=min(len(indices), int(round(shares[c] * n))), replace=False).tolist())
    mask = np.zeros(len(pool), dtype=bool)
    mask[chosen] = True
    return pool.subset(mask)


def original_split(settings: Settings, info: dict[str, Any]) -> tuple[Pool, Pool] | None:
    """(train, validation) of the dataset the champion lineage was bootstrapped on, if still available.

    Never downloads (the daemon and its workers stay offline): a missing cache means None.
    """
    from sentiloop.training import load_split

    source = info.get("data")
    try:
        split = load_split(settings, source, fetch=False)
    except (DataError, OSError) as exc:
        log.warning("original dataset %s unavailable (%s): replay and golden set come from the buffer only", source, exc)
        return None
    return Pool.from_records(split.train), Pool.from_records(split.validation)


def golden_pool(validation: Pool, champion_info: dict[str, Any]) -> Pool:
    """The gate's golden set: the original validation split, less its vote fold when the lineage's
    vote was fitted there (a champion is not judged on the rows its vote was chosen on)."""
    if (champion_info.get("vote") or {}).get("fitted_on") != VOTE_FOLD:
        return validation
    return validation.subset(~in_vote_fold(validation.texts))


def _recent_holdout(holdout: list[StoredEvent], starts: Sequence[int], minimum: int, newest: int) -> list[StoredEvent]:
    """The newest ``newest`` holdout events after the first start that leaves ``minimum``, else the newest overall."""
    for start in starts:
        window = [e for e in holdout if (e.label_seq or 0) > start]
        if len(window) >= minimum:
            return window[-newest:]
    return holdout[-newest:]


def assemble_pools(settings: Settings, store: BufferStore, champion_info: dict[str, Any],
                   recent_since: int | None = None, full: bool = False, until_seq: int | None = None) -> CyclePools:
    """The pools of one run. The gate judges on holdout feedback after ``recent_since`` (the drift point)
    or else after the last retrain; when that is under ``gate.min_holdout`` events, on the newest holdout.
    ``until_seq`` (default: the newest label) ends the window: a resumed run takes the pools it started with.
    Positions are *label* positions: a label that matured after the last retrain is new, however old its event."""
    since = store.mark_seq(RETRAIN_MARK)
    until = store.label_position() if until_seq is None else until_seq
    new = Pool.from_events(list(store.iter_labelled(since=since, until=until, split="train")))
    gate = settings.retrain.gate
    holdout = list(store.iter_labelled(until=until, split="holdout"))
    starts = ([max(since, recent_since)] if recent_since is not None else []) + [since]
    recent = Pool.from_events(_recent_holdout(holdout, starts, gate.min_holdout, gate.recent_holdout))
    older = Pool.from_events(list(store.iter_labelled(until=since, split="train")))
    original = original_split(settings, champion_info)
    if original is not None:
        replay_source, golden = Pool.concat(original[0], older), golden_pool(original[1], champion_info)
    else:
        replay_source = older
        golden = Pool.from_events([e for e in holdout if (e.label_seq or 0) <= since][: gate.recent_holdout])
    if full:
        replay = replay_source
    else:  # a few hundred new events must not become most of what a member sees: replay has a floor
        ratio = settings.retrain.replay_ratio
        replay_size = max(int(round(ratio * len(new))), settings.retrain.min_replay) if ratio > 0 else 0
        replay = replay_sample(replay_source, replay_size, len(settings.labels), settings.models.seed)
    return CyclePools(new, replay, recent, golden, since, until, golden_fixed=original is not None)
