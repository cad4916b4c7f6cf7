"""One retraining method per member (the seed's "strategic differentiation"), plus a ``full`` alternative.

Every strategy takes the champion member (never modified: it keeps serving) and the refined data,
and returns a challenger member. Each is the member's own ``warm_start`` (the ``WarmStartable``
capability); the strategy names come from :mod:`sentiloop.models.registry`:

- word_sentiment "incremental": the champion's dictionary updated by the 0.7·old + 0.3·new rule from
  the refined examples, re-calibrated; a JSON backup per iteration (``word_sentiment_dict_iter_N.json``);
- lstm "transfer": the champion's LSTM and word vectors with a fresh he_normal classifier (LR 1e-2
  ×0.96/100 steps, dropout 0.3);
- bilstm "partial": the champion's weights with the embedding frozen; LSTM + classifier retrained;
  both warm starts train at most ``retrain.warm_start_epochs`` epochs (the ``full`` mode: the member's own);
- bert "fine-tune": the champion, head re-initialised, encoder 1e-5 / head 1e-3, top 2 layers unfrozen
  from the 3rd epoch, weight decay 0.01, ≤ 5 epochs, early stopping on validation loss; frozen layers
  run once per text (:mod:`sentiloop.models.bert_prefix`), so head-only epochs cost almost nothing.
``full`` retrains the member from scratch, on all the old data and the new (see ``assemble_pools``); so
does a retrain whose configuration switched the member to another implementation (``models.lstm.backend``).
"""

from __future__ import annotations

from typing import Literal

from sentiloop.config import Settings
from sentiloop.models.base import FitReport, Member, TrainData, WarmStart, WarmStartable
from sentiloop.models.registry import spec_for

Mode = Literal["strategic", "full"]


def retrain_member(name: str, champion: Member | None, train: TrainData, validation: TrainData, mode: Mode,
                   settings: Settings, budget: WarmStart) -> tuple[Member, FitReport, str]:
    """Return (challenger, fit report, strategy used) for member ``name``; the champion is never modified."""
    spec = spec_for(name)
    switched = champion is not None and champion.kind != spec.implementation(settings.models).kind  # e.g. models.lstm.backend changed
    if mode == "full" or champion is None or switched or not isinstance(champion, WarmStartable):
        member = spec.build(settings, settings.models)
        return member, member.fit(train, validation), "full"
    challenger, report = champion.warm_start(train, validation, budget)
    return challenger, report, spec.retrain_strategy
