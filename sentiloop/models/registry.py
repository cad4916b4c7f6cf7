"""The member registry: the one place that says which ensemble members exist and what each one is.

Every other module iterates :data:`REGISTRY` (config defaults and choices, training order, checkpoint
loading, retrain strategies, the CLI) instead of naming members itself, so adding a member is one
entry here plus its class. A member may have several implementations (the LSTM in torch or in Keras),
chosen by its section's ``backend``; each names its own kind in checkpoints. Classes are imported on
first use, so that ``torch``, ``transformers`` and TensorFlow stay out of processes (the CLI, the
consumer) that never build a neural member.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from sentiloop.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from sentiloop.config import ModelsConfig, Settings
    from sentiloop.models.base import Member

MemberName = Literal["bert", "bilstm", "lstm", "word_sentiment"]


@dataclass(frozen=True)
class Implementation:
    """One way to build a member: the kind its checkpoints name, its class, and the extra it needs."""

    kind: str
    target: str  # "module:Class", imported lazily
    extra: str | None = None  # the pip extra whose packages it imports, named when they are missing

    def member_class(self) -> type[Member]:
        module, attribute = self.target.split(":")
        try:
            cls: type[Member] = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            if self.extra is None:
                raise
            raise ConfigError(f"a {self.kind} member needs {exc.name}, which is not installed: "
                              f"pip install -c constraints.txt 'sentiloop[{self.extra}]'") from None
        return cls


@dataclass(frozen=True)
class MemberSpec:
    """One member: its name (config key, checkpoint folder, metric label) and how it is used."""

    name: MemberName
    backends: Mapping[str, Implementation]  # by the value of its section's ``backend``; the first is the default
    config_section: str  # where its settings live, e.g. "models.bert"
    default_weight: float  # the seed's soft-vote weight
    training_order: int  # the seed's order: word-sentiment → LSTM → BiLSTM → BERT
    retrain_strategy: str  # the name of its warm-start method in retrain results

    def implementation(self, models: ModelsConfig) -> Implementation:
        """The implementation ``models`` selects (its section's ``backend``, where it has one)."""
        default = next(iter(self.backends))
        return self.backends[getattr(getattr(models, self.name, None), "backend", default)]

    def build(self, settings: Settings, models: ModelsConfig) -> Member:
        """A fresh, untrained member configured from its own section."""
        return self.implementation(models).member_class().from_settings(settings, models)


REGISTRY: tuple[MemberSpec, ...] = (
    MemberSpec("word_sentiment", {"numpy": Implementation("word_sentiment", "sentiloop.models.word_member:WordSentimentMember")},
               "dictionary", 0.15, 0, "incremental"),
    MemberSpec("lstm", {"torch": Implementation("lstm", "sentiloop.models.recurrent:LSTMMember"),
                        "keras": Implementation("lstm_keras", "sentiloop.models.keras_lstm:KerasLSTMMember", "tensorflow")},
               "models.lstm", 0.25, 1, "transfer"),
    MemberSpec("bilstm", {"torch": Implementation("bilstm", "sentiloop.models.recurrent:BiLSTMMember")}, "models.bilstm", 0.30, 2, "partial"),
    MemberSpec("bert", {"torch": Implementation("bert", "sentiloop.models.bert:BertMember")}, "models.bert", 0.30, 3, "fine-tune"),
)
MEMBER_NAMES: tuple[MemberName, ...] = tuple(spec.name for spec in sorted(REGISTRY, key=lambda s: s.name))
_BY_NAME: dict[str, MemberSpec] = {spec.name: spec for spec in REGISTRY}
KINDS: dict[str, Implementation] = {impl.kind: impl for spec in REGISTRY for impl in spec.backends.values()}
assert set(_BY_NAME) == set(get_args(MemberName)), "REGISTRY and MemberName disagree"


def spec_for(name: str) -> MemberSpec:
    """The spec of member ``name``; an unknown name is a configuration error naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown ensemble member {name!r}; known members: {', '.join(MEMBER_NAMES)}") from None


def member_class(kind: str) -> type[Member]:
    """The class that loads a checkpoint of ``kind`` (a checkpoint naming an unknown kind is refused)."""
    if kind not in KINDS:
        raise CheckpointError(f"unknown member kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind].member_class()


def in_training_order(names: Sequence[str]) -> list[str]:
    """``names`` sorted by the seed's training order (unknown names refused)."""
    return sorted(names, key=lambda name: spec_for(name).training_order)


def default_weights() -> dict[str, float]:
    return {spec.name: spec.default_weight for spec in REGISTRY}
