"""The retrain run end to end on a small word-sentiment ensemble: promotion, refusal, records, MLflow."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.config import Settings
from sentiloop.events import FeedbackEvent
from sentiloop.models.base import TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.store import ModelStore
from sentiloop.models.word_member import WordSentimentMember
from sentiloop.retrainers.results import RetrainStatus, RetrainSummary
from sentiloop.retrainers.run import run_retrain

OLD = {0: ["awful", "dreadful"], 1: ["bad", "poor"], 2: ["okay", "average"], 3: ["good", "nice"], 4: ["superb", "wonderful"]}
NEW = {0: ["trash", "garbage"], 1: ["meh", "lame"], 2: ["fine", "so-so"], 3: ["solid", "neat"], 4: ["stellar", "epic"]}


def sentences(vocab: dict[int, list[str]], n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [rng.randint(0, 4) for _ in range(n)]
    return [f"{rng.choice(vocab[y])} {rng.choice(vocab[y])} product" for y in labels], labels


def settings_for(tmp_path: Path, mlflow: bool = False) -> Settings:
    return Settings.model_validate({
        "data_dir": str(tmp_path),
        "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
        "mlflow": {"enabled": mlflow},
        "retrain": {"max_iterations": 2, "min_new_events": 10, "gate": {"min_holdout": 20}},
        "buffer": {"holdout_share": 0.3},
    })


def word_champion(settings: Settings, vocab: dict[int, list[str]] = OLD, n: int = 400, dataset: str = "synthetic") -> tuple[int, Path]:
    """A word-sentiment ensemble trained on ``n`` sentences of ``vocab``, saved as the next version under data_dir."""
    texts, labels = sentences(vocab, n, 1)
    data = TrainData(texts, np.array(labels), domains=["old"] * len(texts))
    member = WordSentimentMember(settings.polarities, min_count=1, seed_lexicon="none")
    member.fit(data, data)
    version, path = ModelStore(settings.data_dir).next_path()
    Ensemble({"word_sentiment": member}, {"word_sentiment": 1.0}, settings.label_names, info={"data": dataset}).save(path)
    return version, path


def bootstrap(settings: Settings, dataset: str = "synthetic") -> None:
    version, _ = word_champion(settings, dataset=dataset)
    store = ModelStore(settings.data_dir)
    store.set_champion(version, "bootstrap")
    # The golden set comes from the buffer when the original dataset is unknown: store old-domain events first.
    feed(settings, *sentences(OLD, 300, 2), prefix="old")
    SQLiteBufferStore(settings.db_path, settings.label_names).set_mark("last_retrain")


def feed(settings: Settings, texts: list[str], labels: list[int], prefix: str, shuffle: bool = False) -> None:
    if shuffle:
        labels = random.Random(9).sample(labels, len(labels))
    store = SQLiteBufferStore(settings.db_path, settings.label_names)
    store.append_batch([SourcedEvent(FeedbackEvent(f"{prefix}{i}", t, y, None, None, "new", "en", 0), "t", 0, i)
                        for i, (t, y) in enumerate(zip(texts, labels))])
    store.close()


def test_better_challenger_is_promoted_and_recorded(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    bootstrap(settings)
    feed(settings, *sentences(NEW, 600, 3), prefix="new")
    summary = run_retrain(settings, "manual", "test")
    assert summary.status is RetrainStatus.PROMOTED, summary.gate_reasons
    assert summary.gate_metrics is not None and summary.gate_metrics.gain("recent") > 0.1
    assert ModelStore(tmp_path).champion() == summary.version == 2
    first = summary.iterations[0]
    assert first.strategies == {"word_sentiment": "incremental"}
    assert set(first.metrics) == {"ensemble", "word_sentiment"}  # nested: owner → split → accuracy
    assert set(first.metrics["word_sentiment"]) == {"validation", "golden", "recent"}
    assert first.metrics["ensemble"]["recent"] == first.accuracy("ensemble", "recent")
    assert summary.run_id is not None
    run_dir = tmp_path / "retrain" / summary.run_id
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "completed" and state["params"]["max_iterations"] == 2
    assert RetrainSummary.model_validate(state["summary"]) == summary  # state.json keeps the same JSON form
    assert (run_dir / "dictionary_backups" / "word_sentiment_dict_iter_1.json").exists()
    again = run_retrain(settings, "volume", "nothing new")
    assert again.status is RetrainStatus.SKIPPED and again.why  # the mark moved: no new events since


def test_a_lineage_on_its_original_dataset_carries_its_best_golden_accuracy(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    original = tmp_path / "original.jsonl"
    texts, labels = sentences(OLD, 500, 5)
    original.write_text("".join(json.dumps({"text": t, "label": settings.label_names[y]}) + "\n" for t, y in zip(texts, labels)))
    bootstrap(settings, dataset=str(original))
    feed(settings, *sentences(NEW, 600, 3), prefix="new")
    summary = run_retrain(settings, "manual", "test")
    assert summary.pools is not None and summary.pools.golden == 51  # the file's stratified validation split, not the buffer
    assert summary.version is not None and summary.gate_metrics is not None
    info = Ensemble.load(ModelStore(tmp_path).path(summary.version)).info
    g = summary.gate_metrics
    assert info["data"] == str(original)  # the lineage keeps naming its dataset
    assert info["golden_best"] == max(g.golden_reference, g.of("challenger", "golden"))


def test_challenger_from_shuffled_labels_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    bootstrap(settings)
    texts, labels = sentences(OLD, 600, 4)
    feed(settings, texts, labels, prefix="noise", shuffle=True)
    summary = run_retrain(settings, "manual", "shuffled labels")
    assert summary.status is RetrainStatus.REJECTED
    assert summary.gate_reasons
    assert ModelStore(tmp_path).champion() == 1  # the champion keeps serving


@pytest.mark.integration
def test_mlflow_registry_round_trip_by_alias(tmp_path: Path) -> None:
    import mlflow
    import pandas as pd

    settings = settings_for(tmp_path, mlflow=True)
    bootstrap(settings)
    feed(settings, *sentences(NEW, 600, 5), prefix="new")
    summary = run_retrain(settings, "manual", "test")
    assert summary.status is RetrainStatus.PROMOTED
    from sentiloop.monitoring.tracking import Tracker

    tracker = Tracker(settings)
    assert tracker.alias_version("champion") == summary.registered_version
    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.registered_model}@champion")
    out = model.predict(pd.DataFrame({"text": ["stellar epic product", "trash garbage product"]}))
    assert out["label"].tolist() == ["very_positive", "very_negative"]
    runs = mlflow.search_runs(experiment_names=["ensemble_retraining"])
    assert {"params.max_iterations", "params.convergence_threshold", "params.confidence_threshold"} <= set(runs.columns)
    assert "metrics.ensemble_accuracy" in runs.columns and "metrics.refinement_rate" in runs.columns
    assert {"metrics.word_sentiment_recent_accuracy", "metrics.gate_challenger_golden_accuracy"} <= set(runs.columns)  # flat names


def test_a_full_retrain_replays_all_the_old_data_a_strategic_one_a_sample(tmp_path: Path) -> None:
    from sentiloop.retrainers.data import assemble_pools

    settings = settings_for(tmp_path)
    settings = settings.model_copy(update={"retrain": settings.retrain.model_copy(update={"min_replay": 40, "replay_ratio": 0.5})})
    bootstrap(settings)
    feed(settings, *sentences(NEW, 100, 3), prefix="new")
    store = SQLiteBufferStore(settings.db_path, settings.label_names)
    try:
        older = len(list(store.iter_labelled(until=store.mark_seq("last_retrain"), split="train")))
        strategic = assemble_pools(settings, store, {"data": "synthetic"})
        full = assemble_pools(settings, store, {"data": "synthetic"}, full=True)
    finally:
        store.close()
    assert len(full.replay) == older > 100
    assert len(strategic.replay) == pytest.approx(max(0.5 * len(strategic.new), 40), abs=3)  # class shares round
    assert strategic.new.ids == full.new.ids and strategic.golden.ids == full.golden.ids


def test_the_champion_scores_a_text_once_across_retrains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentiloop.models.scores import ScoreStore

    settings = settings_for(tmp_path)
    bootstrap(settings)
    stored: list[list[str]] = []
    original_put = ScoreStore.put

    def recording_put(self: ScoreStore, version: int, texts: list[str], probabilities: np.ndarray) -> None:
        stored.append(list(texts))
        original_put(self, version, texts, probabilities)

    monkeypatch.setattr(ScoreStore, "put", recording_put)
    feed(settings, *sentences(OLD, 300, 4), prefix="noise", shuffle=True)
    assert run_retrain(settings, "manual", "first").status is RetrainStatus.REJECTED  # v1 stays the champion
    first = {t for texts in stored for t in texts}
    stored.clear()
    texts, labels = sentences(OLD, 300, 5)
    feed(settings, [f"{t} number{i}" for i, t in enumerate(texts)], labels, prefix="more", shuffle=True)  # texts not seen before
    assert run_retrain(settings, "manual", "second").champion_before == 1
    second = {t for texts in stored for t in texts}
    golden = {e.event.text for e in SQLiteBufferStore(settings.db_path, settings.label_names).iter_labelled(split="holdout")
              if e.event.event_id.startswith("old")}
    assert golden & first and not golden & second  # the golden set was scored by the first run only
    assert {t for t in second if 'number' in t}  # the new feedback had not been scored before
