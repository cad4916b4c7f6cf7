"""One retraining method per member (the seed's "strategic differentiation"), plus a ``full`` alternative.

Every strategy takes the champion member (never modified: it keeps serving) and the refined data,
and returns a challenger member:

- word_sentiment "incremental": the champion's dictionary updated by the 0.7·old + 0.3·new rule from
  the refined examples, re-calibrated; a JSON backup per iteration (``word_sentiment_dict_iter_N.json``);
- lstm "transfer": a fresh he_normal LSTM (LR 1e-2 ×0.96/100 steps, dropout 0.3) warm-started from the
  champion's word vectors;
- bilstm "partial": the champion's weights with the embedding frozen; LSTM + classifier retrained;
  both warm starts train at most ``retrain.warm_start_epochs`` epochs (the ``full`` mode: the member's own);
- bert "fine-tune": the champion, head re-initialised, encoder 1e-5 / head 1e-3, top 2 layers unfrozen
  from the 3rd epoch, weight decay 0.01, ≤ 5 epochs, early stopping on validation loss.
``full`` retrains the member from scratch on the same data (for comparison).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sentiloop.config import Settings
from sentiloop.files import atomic_write_json
from sentiloop.models.base import FitReport, Member, TrainData

Mode = Literal["strategic", "full"]
MIN_RECALIBRATION = 1000  # held-out examples needed before the dictionary's calibration map is refitted


@dataclass
class StrategyContext:
    settings: Settings
    iteration: int
    backup_dir: Path
    bert_epochs: int = 5
    bert_max_steps: int | None = None


def retrain_member(name: str, champion: Member | None, train: TrainData, validation: TrainData,
                   mode: Mode, context: StrategyContext) -> tuple[Member, FitReport, str]:
    """Return (challenger, fit report, strategy used) for member ``name``."""
    from sentiloop.training import build_member

    if mode == "full" or champion is None:
        member = build_member(name, context.settings, context.settings.models)
        return member, member.fit(train, validation), "full"
    if name == "word_sentiment":
        return (*_incremental_dictionary(champion, train, validation, context), "incremental")
    epochs = context.settings.retrain.warm_start_epochs
    if name == "lstm":
        member = build_member("lstm", context.settings, context.settings.models)
        return member, member.transfer_retrain(train, validation, champion, epochs=epochs), "transfer"  # type: ignore[attr-defined]
    if name == "bilstm":
        member = champion.clone()  # type: ignore[attr-defined]
        return member, member.partial_retrain(train, validation, epochs=epochs), "partial"
    if name == "bert":
        member = copy.deepcopy(champion)
        # "top 2 layers from the 3rd epoch": epochs count from 0, so the 3rd epoch has index 2.
        report = member.fine_tune(train, validation, epochs=context.bert_epochs, max_steps=context.bert_max_steps,  # type: ignore[attr-defined]
                                  unfreeze_from_epoch=2, top_layers=2)
        return member, report, "fine-tune"
    raise ValueError(f"no strategy for member {name!r}")


def _incremental_dictionary(champion: Member, train: TrainData, validation: TrainData,
                            context: StrategyContext) -> tuple[Member, FitReport]:
    member = copy.deepcopy(champion)
    model = member.model  # type: ignore[attr-defined]
    for text, label, weight in zip(train.texts, train.labels, train.weights if train.weights is not None else [1.0] * len(train)):
        model.learn_one(text, int(label), float(weight))  # a down-weighted (doubtful) label moves words less
    model.changes.clear()
    if len(validation) >= MIN_RECALIBRATION:  # a small fold would over-fit the map: keep the champion's
        member.calibrate(validation)  # type: ignore[attr-defined]
    atomic_write_json(context.backup_dir / f"word_sentiment_dict_iter_{context.iteration}.json", model.to_dict())
    return member, FitReport(steps=len(train), epochs=1)
