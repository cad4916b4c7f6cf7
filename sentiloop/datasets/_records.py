"""The one record type every loader returns, so trainers and evaluators see a single shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """A labelled sentence.

    ``label`` is an index into the configured label set. ``score`` is the continuous source rating
    when there is one (VADER: mean human rating on -4..+4), kept so a different label set can be
    derived later without re-reading the source.
    """

    id: str
    text: str
    label: int
    domain: str = "unknown"
    score: float | None = None


class LabelLike(Protocol):
    """Anything with a name and a polarity, e.g. :class:`sentiloop.config.Label`."""

    @property
    def name(self) -> str: ...

    @property
    def polarity(self) -> float: ...


def default_labels() -> list[LabelLike]:
    """The configured default label set (imported lazily: config pulls in pydantic)."""
    from sentiloop.config import DEFAULT_LABELS

    return list(DEFAULT_LABELS)


def label_names(labels: Sequence[LabelLike | str] | None) -> list[str]:
    """Names of a label set given as Label objects or plain names; None means the default set."""
    if labels is None:
        labels = default_labels()
    return [item if isinstance(item, str) else item.name for item in labels]
