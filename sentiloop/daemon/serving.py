"""The live champion for ``POST /v1/predict``, swapped atomically after a promotion.

A request takes one reference to the current :class:`Served` and uses only it, so a swap in the
middle of a request changes nothing for that request: it finishes on the model it started with,
and the next one gets the new champion. No request fails because of a swap.
An operator may override the vote (members enabled, weights) by config reload: the override is a
new view over the same loaded members — no reload from disk, no retrain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentiloop.models.ensemble import Ensemble


@dataclass(frozen=True)
class Served:
    ensemble: Ensemble  # what votes: the champion, or an operator's view of it
    version: int
    loaded_ms: int


def vote_view(ensemble: Ensemble, enabled: Sequence[str], weights: Mapping[str, float]) -> Ensemble:
    """The same members (only the enabled ones that are loaded) voting with ``weights``."""
    members = {name: member for name, member in ensemble.members.items() if name in enabled} or dict(ensemble.members)
    return Ensemble(members, weights, ensemble.label_names, ensemble.metrics, ensemble.info, ensemble.class_bias)


class Serving:
    def __init__(self) -> None:
        self._current: Served | None = None
        self._champion: Ensemble | None = None  # as loaded: the base every override is a view of
        self._override: tuple[list[str], dict[str, float]] | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Served | None:
        return self._current

    def swap(self, ensemble: Ensemble, version: int) -> None:
        """Serve a new champion; an operator's vote override is kept (it names members, not a version)."""
        with self._lock:
            self._champion = ensemble
            voting = vote_view(ensemble, *self._override) if self._override is not None else ensemble
            self._current = Served(voting, version, int(time.time() * 1000))

    def override_vote(self, enabled: Sequence[str], weights: Mapping[str, float]) -> None:
        """Change the live vote (config reload of models.enabled / models.weights)."""
        with self._lock:
            self._override = (list(enabled), dict(weights))
            if self._current is not None and self._champion is not None:
                self._current = Served(vote_view(self._champion, enabled, weights), self._current.version,
                                       self._current.loaded_ms)

    def predict(self, texts: Sequence[str]) -> dict[str, Any] | None:
        served = self._current  # one reference for the whole request
        if served is None:
            return None
        probabilities = served.ensemble.predict_proba(list(texts))
        names = served.ensemble.label_names
        return {
            "model_version": served.version,
            "predictions": [
                {"label": names[int(row.argmax())], "probabilities": {n: float(p) for n, p in zip(names, row)}}
                for row in probabilities
            ],
        }
