"""The one fixed train/validation/test split every command shares (seeded, stratified).

Order inside each label x domain stratum comes from sha256(seed, id), not from a RNG stream, so the
split is identical across Python/numpy versions and platforms and does not depend on input order;
adding records moves only a few neighbours across the boundaries.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from sentiloop.datasets._records import Record
from sentiloop.errors import ConfigError, DataError

DEFAULT_SEED = 13
DEFAULT_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """Three disjoint parts, each sorted by record id."""

    train: list[Record]
    validation: list[Record]
    test: list[Record]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of n * ratios (ties go to the earlier part)."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _stratum(record: Record) -> Hashable:
    return (record.label, record.domain)


def split_dataset(
    records: Iterable[Record], seed: int = DEFAULT_SEED, ratios: Sequence[float] = DEFAULT_RATIOS
) -> Split:
    """Split into train/validation/test with ``ratios`` inside every label x domain stratum."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise ConfigError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    records = sorted(records, key=lambda r: r.id)
    duplicates = [rid for rid, n in Counter(r.id for r in records).items() if n > 1]
    if duplicates:
        raise DataError(f"record ids must be unique to split, {len(duplicates)} repeat, e.g. {duplicates[:3]}")
    strata: dict[Hashable, list[Record]] = defaultdict(list)
    for record in records:
        strata[_stratum(record)].append(record)
    parts: tuple[list[Record], list[Record], list[Record]] = ([], [], [])
    for members in strata.values():
        members.sort(key=lambda r: hashlib.sha256(f"{seed}\x00{r.id}".encode()).digest())
        start = 0
        for part, count in zip(parts, _allocate(len(members), ratios)):
            part.extend(members[start : start + count])
            start += count
    for part in parts:
        part.sort(key=lambda r: r.id)
    return Split(*parts)
