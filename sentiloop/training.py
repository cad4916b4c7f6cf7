"""Bootstrap training of the ensemble (``sentiloop train``), evaluation and the TF-IDF baseline.

Members are trained in the seed's order (word-sentiment → LSTM → BiLSTM → BERT) on one shared,
seeded split, so ``train``, ``eval`` and later retrains all see the same test set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from sentiloop.config import ModelsConfig, Settings
from sentiloop.datasets import Record, Split, load_labelled_file, load_nsmc_korean, load_vader_ground_truth, split_dataset
from sentiloop.evaluation import classification_report
from sentiloop.models.base import HasPretrainedTokenizer, Member, TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.registry import in_training_order, spec_for
from sentiloop.models.store import ModelStore
from sentiloop.models.vote import SEED, combine, fit_vote, in_vote_fold

log = logging.getLogger(__name__)

Profile = Literal["fast", "full"]
# What each profile changes on top of the config (fast: for demos and CI, ≤ 3 min on 2 cores).
PROFILE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {
        "bert": {"max_steps": 120, "learning_rate": 2e-4, "epochs": 1, "eval_every": 1000},
        "lstm": {"epochs": 1},
        "bilstm": {"epochs": 1},
    },
    "full": {},
}


def profile_config(models: ModelsConfig, profile: Profile) -> ModelsConfig:
    """The models config with the profile's overrides applied."""
    updates = {name: getattr(models, name).model_copy(update=values) for name, values in PROFILE_OVERRIDES[profile].items()}
    return models.model_copy(update=updates)


# Datasets shipped with (or fetched by) sentiloop, by the name ``--data`` takes and ``ensemble.info["data"]`` keeps.
VADER, NSMC_KO = "vader", "nsmc-ko"
_LEGACY_NAMES = {"vader_ground_truth": VADER}  # what checkpoints written before NSMC call the VADER data


def default_data(settings: Settings) -> str:
    """The bundled dataset of the configured language."""
    return NSMC_KO if settings.language == "ko" else VADER


def load_split(settings: Settings, data: str | None = None, fetch: bool = True) -> Split:
    """The shared split of a bundled dataset (default: the configured language's) or of a labelled file.

    ``fetch=False`` (the daemon and its retrain workers) never downloads: a missing cache is a DataError.
    """
    data = data or default_data(settings)
    name = _LEGACY_NAMES.get(data, data)
    records: list[Record]
    if name == VADER:
        records = load_vader_ground_truth(settings.data_dir, settings.labels, fetch=fetch)
    elif name == NSMC_KO:
        records = load_nsmc_korean(settings.labels)
    else:
        records = load_labelled_file(name, settings.labels)
    return split_dataset(records, seed=settings.models.seed)


def as_train_data(records: Sequence[Record]) -> TrainData:
    return TrainData([r.text for r in records], np.array([r.label for r in records], dtype=np.int64), domains=[r.domain for r in records])


def evaluate(ensemble: Ensemble, data: TrainData, probabilities: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per member and for the ensemble: accuracy, macro-F1, per-class F1, per-domain accuracy, ECE.

    ``probabilities``: the members' answers on ``data`` where the caller already has them.
    """
    probabilities = probabilities if probabilities is not None else ensemble.member_probabilities(data.texts)
    reports = {name: classification_report(p, data.labels, ensemble.label_names, data.domains) for name, p in probabilities.items()}
    reports["ensemble"] = classification_report(ensemble.vote(probabilities), data.labels,
                                                ensemble.label_names, data.domains)
    return reports


def train_ensemble(settings: Settings, profile: Profile = "full", data: str | None = None) -> tuple[int, Ensemble, dict[str, Any]]:
    """Train every enabled member, evaluate, save as the next version and make it champion if none is."""
    models = profile_config(settings.models, profile)
    split = load_split(settings, data)
    train, validation, test = (as_train_data(part) for part in (split.train, split.validation, split.test))
    members: dict[str, Member] = {}
    scored: dict[str, np.ndarray] = {}  # validation answers early stopping already computed
    timings: dict[str, float] = {}
    for name in in_training_order(models.enabled):
        started = time.monotonic()
        log.info("training %s on %d examples (%s profile)", name, len(train), profile)
        member = spec_for(name).build(settings, models)
        if (known := member.fit(train, validation).validation_probabilities) is not None:
            scored[name] = known
        members[name] = member
        timings[name] = round(time.monotonic() - started, 1)
    info: dict[str, Any] = {"profile": profile, "data": data or default_data(settings), "train_seconds": timings,
                            "split_sizes": split.sizes()}
    weights, class_bias = dict(models.weights), None
    if models.vote == "fitted":
        fold = in_vote_fold(validation.texts)  # the other half stays the gate's golden set
        on_fold = {name: (scored[name] if name in scored else m.predict_proba(validation.texts))[fold] for name, m in members.items()}
        vote = fit_vote(on_fold, validation.labels[fold], models.weights, reading_notes(members, train.texts))
        for name, reason in vote.excluded.items():
            log.warning("%s votes with weight 0: %s", name, reason)
        log.info("vote on the validation split's vote fold: %s; serving %s", ", ".join(f"{k} {v:.3f}" for k, v in vote.candidates.items()), vote.chosen)
        weights, class_bias, info["vote"] = vote.weights, vote.class_bias, vote.report()
    ensemble = Ensemble(members, weights, settings.label_names, info=info, class_bias=class_bias)
    on_test = ensemble.member_probabilities(test.texts)
    ensemble.metrics = {"test": evaluate(ensemble, test, on_test)}
    if "vote" in info and info["vote"]["chosen"] != SEED:
        ensemble.metrics["test_seed_weights"] = classification_report(
            combine(on_test, models.weights), test.labels, settings.label_names, test.domains)
    store = ModelStore(settings.data_dir)
    version, path = store.next_path()
    ensemble.info["version"] = version
    ensemble.save(path)
    first = store.champion() is None
    if first:
        store.set_champion(version, f"bootstrap by `sentiloop train --profile {profile}`")
    if settings.mlflow.enabled:
        _track_bootstrap(settings, store, version, path, ensemble, champion=first)
    return version, ensemble, ensemble.metrics


def reading_notes(members: Mapping[str, Member], texts: Sequence[str], sample: int = 2000) -> dict[str, str]:
    """Per member with a pretrained vocabulary: how well it covers the training text (a warning's why)."""
    return {name: member.tokenizer_fit(texts[:sample]).describe() for name, member in members.items()
            if isinstance(member, HasPretrainedTokenizer)}


def _track_bootstrap(settings: Settings, store: ModelStore, version: int, path: Any, ensemble: Ensemble, champion: bool) -> None:
    """Log the bootstrap run and register the ensemble (the first one gets the ``champion`` alias)."""
    from sentiloop.monitoring.tracking import Tracker

    tracker = Tracker(settings)
    test = ensemble.metrics["test"]
    with tracker.run(f"bootstrap_v{version:04d}", {"profile": ensemble.info["profile"], "members": ",".join(ensemble.members),
                                                   **{f"weight_{k}": v for k, v in ensemble.weights.items()}}):
        tracker.log_metrics({"ensemble_accuracy": test["ensemble"]["accuracy"],
                             **{f"{name}_accuracy": report["accuracy"] for name, report in test.items() if name != "ensemble"}})
        registered = tracker.register_ensemble(path, "champion" if champion else "challenger", f"sentiloop ensemble v{version:04d} (bootstrap)")
    store.record_registration(version, registered)
    log.info("registered %s version %d%s", settings.mlflow.registered_model, registered, " as champion" if champion else "")


def baseline_report(settings: Settings, split: Split) -> dict[str, Any]:
    """The cheap alternative a user could pick: TF-IDF word + character n-grams with logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    train, test = as_train_data(split.train), as_train_data(split.test)
    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
    ])
    model = make_pipeline(features, LogisticRegression(max_iter=2000, C=2.0))
    model.fit(train.texts, train.labels)
    return classification_report(model.predict_proba(test.texts), test.labels, settings.label_names, test.domains)
