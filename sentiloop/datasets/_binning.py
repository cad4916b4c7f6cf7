"""Continuous sentiment scores -> class indices of a configured label set.

The bins are derived from the label polarities: labels are ordered by polarity, and ``edges``
(ascending, one fewer than the labels) cut the score axis between them. A score that equals an
edge goes to the class *farther from zero* (an edge at 0 sends 0 to the positive side). With the
VADER ground truth that rule reproduces the published 5-class counts exactly.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sentiloop.datasets._records import LabelLike, default_labels
from sentiloop.errors import ConfigError, DataError

# Known binnings, keyed by how many labels are negative / zero / positive in polarity.
DEFAULT_EDGES: dict[tuple[int, int, int], tuple[float, ...]] = {
    (2, 1, 2): (-2.0, -0.5, 0.5, 2.0),  # very_negative, negative, neutral, positive, very_positive
    (1, 1, 1): (-0.5, 0.5),  # negative, neutral, positive
}


@dataclass(frozen=True)
class ScoreBins:
    """Edges on the score axis and, for each bin (lowest score first), the label index it maps to."""

    edges: tuple[float, ...]
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.order) != len(self.edges) + 1:
            raise ConfigError(f"{len(self.edges)} edges need {len(self.edges) + 1} labels, got {len(self.order)}")
        if any(not math.isfinite(e) for e in self.edges) or any(a >= b for a, b in zip(self.edges, self.edges[1:])):
            raise ConfigError(f"edges must be finite and strictly ascending, got {list(self.edges)}")
        if sorted(self.order) != list(range(len(self.order))):
            raise ConfigError(f"order must be a permutation of 0..{len(self.order) - 1}, got {list(self.order)}")

    def label_of(self, score: float) -> int:
        """The label index for one score; an edge value belongs to the class farther from zero."""
        if not math.isfinite(score):
            raise DataError(f"cannot bin a non-finite score {score!r}")
        negative = [e for e in self.edges if e < 0]
        non_negative = self.edges[len(negative):]
        position = bisect_left(negative, score) + bisect_right(non_negative, score)
        return self.order[position]

    def labels_of(self, scores: Iterable[float]) -> list[int]:
        return [self.label_of(score) for score in scores]


def bins_for_labels(labels: Sequence[LabelLike] | None = None, edges: Sequence[float] | None = None) -> ScoreBins:
    """Bins for a label set: ``edges`` if given, else the default for 5- and 3-class sets.

    Raises DataError for a label set with no known binning (pass ``edges`` explicitly then).
    """
    labels = default_labels() if labels is None else list(labels)
    polarities = [float(label.polarity) for label in labels]
    if len(set(polarities)) != len(polarities):
        raise DataError(f"label polarities must be distinct to bin scores, got {_describe(labels)}")
    order = tuple(sorted(range(len(labels)), key=lambda i: polarities[i]))
    if edges is None:
        signs = (
            sum(p < 0 for p in polarities),
            sum(p == 0 for p in polarities),
            sum(p > 0 for p in polarities),
        )
        if signs not in DEFAULT_EDGES:
            raise DataError(
                f"no default score binning for the label set {_describe(labels)}; defaults exist for "
                "5 labels (2 negative, 1 zero, 2 positive polarity: edges -2, -0.5, 0.5, 2) and "
                "3 labels (negative, zero, positive: edges -0.5, 0.5); pass "
                f"{len(labels) - 1} ascending edges explicitly"
            )
        edges = DEFAULT_EDGES[signs]
    try:
        return ScoreBins(tuple(float(e) for e in edges), order)
    except ValueError as exc:
        raise DataError(f"invalid score bins for {_describe(labels)}: {exc}") from None


def _describe(labels: Sequence[LabelLike]) -> str:
    return "[" + ", ".join(f"{label.name} ({label.polarity:+g})" for label in labels) + "]"
