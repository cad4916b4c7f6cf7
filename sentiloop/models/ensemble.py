"""The ensemble: a weighted soft vote over members' probabilities, and its checkpoint directory.

The weights are chosen on held-out data by :mod:`sentiloop.models.vote` (``models.vote: fitted``, the
default) or are the seed's as given (BERT .30, BiLSTM .30, LSTM .25, word-sentiment .15; ``fixed``); a
disabled or missing member simply drops out and the remaining weights are renormalised. An ensemble may also carry a per-class log-prior correction
(``class_bias``, fitted on held-out data) so that its class mix matches the data rather than whatever
its freshly trained members drifted to.
An ensemble checkpoint is ``ensemble.json`` (weights, labels, metrics) + ``members/<name>/``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory, atomic_write_json, read_json
from sentiloop.models.base import Member
from sentiloop.models.checkpoint import verify_member_dir
from sentiloop.models.registry import member_class
from sentiloop.models.vote import apply_class_bias, combine, normalise_weights

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "sentiloop.ensemble/1"


class Ensemble:
    """Members voting with weights; ``predict_proba`` is their weighted mean probability."""

    def __init__(self, members: Mapping[str, Member], weights: Mapping[str, float], label_names: Sequence[str],
                 metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
                 class_bias: Sequence[float] | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if class_bias is not None and len(class_bias) != len(label_names):
            raise CheckpointError(f"class_bias has {len(class_bias)} values for {len(label_names)} labels")
        self.members = dict(members)
        self.label_names = list(label_names)
        self.weights = normalise_weights(weights, list(self.members))
        self.class_bias = None if class_bias is None else [float(b) for b in class_bias]
        self.metrics = metrics or {}
        self.info = info or {}

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def member_probabilities(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return {name: member.predict_proba(texts) for name, member in self.members.items()}

    def vote(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """This ensemble's answer from its members' probabilities: weighted vote, then the class bias."""
        return apply_class_bias(combine(probabilities, self.weights), self.class_bias)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.vote(self.member_probabilities(texts))

    # -- checkpoint ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write members and ``ensemble.json`` into a temp dir, then rename it into place."""
        with atomic_directory(directory, replace=False) as tmp:
            for name, member in self.members.items():
                member.save(tmp / "members" / name)
            atomic_write_json(tmp / ENSEMBLE_FILE, self.document())

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created_ms": int(time.time() * 1000),
            "labels": self.label_names,
            "members": {name: member.kind for name, member in self.members.items()},
            "weights": self.weights,
            "class_bias": self.class_bias,
            "metrics": self.metrics,
            "info": self.info,
        }

    @classmethod
    def load(cls, directory: Path, only: Sequence[str] | None = None) -> Ensemble:
        """Load (and sha256-verify) every member, or just ``only`` of them."""
        document = read_json(directory / ENSEMBLE_FILE,
                             f"{directory} is not an ensemble checkpoint (no {ENSEMBLE_FILE}); run `sentiloop train` first")
        if document.get("format") != FORMAT:
            raise CheckpointError(f"{directory}: unknown ensemble format {document.get('format')!r}")
        members: dict[str, Member] = {}
        for name, kind in document["members"].items():
            if only is not None and name not in only:
                continue
            member_dir = directory / "members" / name
            verify_member_dir(member_dir, kind)
            members[name] = member_class(kind).load(member_dir)
        if not members:
            raise CheckpointError(f"{directory} has none of the members {list(only or [])}")
        return cls(members, document["weights"], document["labels"], document.get("metrics"), document.get("info"),
                   document.get("class_bias"))

