"""The member registry: the one place that says which ensemble members exist and what each one is.

Every other module iterates :data:`REGISTRY` (config defaults and choices, training order, checkpoint
loading, retrain strategies, the CLI) instead of naming members itself, so adding a member is one
entry here plus its class. Classes are imported on first use, so that ``torch`` and ``transformers``
stay out of processes (the CLI, the consumer) that never build a neural member.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from sentiloop.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from sentiloop.config import ModelsConfig, Settings
    from sentiloop.models.base import Member

MemberName = Literal["bert", "bilstm", "lstm", "word_sentiment"]


@dataclass(frozen=True)
class MemberSpec:
    """One member kind: its name (config key, checkpoint folder, metric label) and how it is used."""

    name: MemberName
    implementation: str  # "module:Class", imported lazily
    config_section: str  # where its settings live, e.g. "models.bert"
    default_weight: float  # the seed's soft-vote weight
    training_order: int  # the seed's order: word-sentiment → LSTM → BiLSTM → BERT
    retrain_strategy: str  # the name of its warm-start method in retrain results

    def member_class(self) -> type[Member]:
        module, attribute = self.implementation.split(":")
        cls: type[Member] = getattr(importlib.import_module(module), attribute)
        return cls

    def build(self, settings: Settings, models: ModelsConfig) -> Member:
        """A fresh, untrained member configured from its own section."""
        return self.member_class().from_settings(settings, models)


REGISTRY: tuple[MemberSpec, ...] = (
    MemberSpec("word_sentiment", "sentiloop.models.word_member:WordSentimentMember", "dictionary", 0.15, 0, "incremental"),
    MemberSpec("lstm", "sentiloop.models.recurrent:LSTMMember", "models.lstm", 0.25, 1, "transfer"),
    MemberSpec("bilstm", "sentiloop.models.recurrent:BiLSTMMember", "models.bilstm", 0.30, 2, "partial"),
    MemberSpec("bert", "sentiloop.models.bert:BertMember", "models.bert", 0.30, 3, "fine-tune"),
)
MEMBER_NAMES: tuple[MemberName, ...] = tuple(spec.name for spec in sorted(REGISTRY, key=lambda s: s.name))
_BY_NAME: dict[str, MemberSpec] = {spec.name: spec for spec in REGISTRY}
assert set(_BY_NAME) == set(get_args(MemberName)), "REGISTRY and MemberName disagree"


def spec_for(name: str) -> MemberSpec:
    """The spec of member ``name``; an unknown name is a configuration error naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown ensemble member {name!r}; known members: {', '.join(MEMBER_NAMES)}") from None


def member_class(kind: str) -> type[Member]:
    """The class that loads a checkpoint of ``kind`` (a checkpoint naming an unknown kind is refused)."""
    if kind not in _BY_NAME:
        raise CheckpointError(f"unknown member kind {kind!r}; known: {', '.join(MEMBER_NAMES)}")
    return _BY_NAME[kind].member_class()


def in_training_order(names: Sequence[str]) -> list[str]:
    """``names`` sorted by the seed's training order (unknown names refused)."""
    return sorted(names, key=lambda name: spec_for(name).training_order)


def default_weights() -> dict[str, float]:
    return {spec.name: spec.default_weight for spec in REGISTRY}
