"""A retrain whose worker is killed resumes from its newest iteration checkpoint, with the same result.

The worker is the real CLI process (``sentiloop retrain --offline``), killed with SIGKILL once its first
iteration checkpoint exists, i.e. during iteration 2; the next run goes on from there. A twin data dir,
copied before anything ran, retrains uninterrupted with the same seeds: every iteration's metrics,
weights and refinement statistics, the gate's numbers and the challenger's predictions must match.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
from sentiloop.config import LSTMConfig, Settings
from sentiloop.events import FeedbackEvent
from sentiloop.models.base import TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.recurrent import LSTMMember
from sentiloop.models.store import ModelStore
from sentiloop.models.word_member import WordSentimentMember
from sentiloop.retrainers.checkpoints import CheckpointManager, interrupted_runs
from sentiloop.retrainers.results import RetrainStatus, RetrainSummary
from sentiloop.retrainers.run import RetrainWorker

OLD = {0: ["awful", "dreadful"], 1: ["bad", "poor"], 2: ["okay", "average"], 3: ["good", "nice"], 4: ["superb", "wonderful"]}
NEW = {0: ["trash", "garbage"], 1: ["meh", "lame"], 2: ["fine", "so-so"], 3: ["solid", "neat"], 4: ["stellar", "epic"]}
FILLER = ["the", "product", "was", "really", "quite", "for", "me", "today", "honestly", "overall"]
LSTM = {"embedding_dim": 16, "hidden_size": 16, "epochs": 3, "batch_size": 32, "min_freq": 1, "pretrained_embeddings": False}


def sentences(vocab: dict[int, list[str]], n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [rng.randint(0, 4) for _ in range(n)]
    texts = [" ".join([rng.choice(vocab[y]), *rng.sample(FILLER, 4), rng.choice(vocab[y])]) for y in labels]
    flipped = [y if rng.random() > 0.15 else rng.randint(0, 4) for y in labels]  # some noise for refinement to find
    return texts, flipped


def config(data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "models": {"enabled": ["word_sentiment", "lstm"], "word_sentiment_lexicon": "none", "lstm": LSTM},
        "mlflow": {"enabled": False},
        "retrain": {"max_iterations": 3, "min_new_events": 10, "warm_start_epochs": 3, "gate": {"min_holdout": 20},
                    "convergence": {"patience": 10, "min_refinement_rate": 0.0, "min_prediction_variance": 0.0}},
        "buffer": {"holdout_share": 0.2},
    }


def prepare(data_dir: Path) -> Path:
    """A word-sentiment + LSTM champion on the old vocabulary, then 1,500 new-vocabulary events in the buffer."""
    settings = Settings.model_validate(config(data_dir))
    texts, labels = sentences(OLD, 600, 1)
    data = TrainData(texts, np.array(labels), domains=["old"] * len(texts))
    word = WordSentimentMember(settings.polarities, min_count=1, seed_lexicon="none")
    word.fit(data, data)
    lstm = LSTMMember(5, LSTMConfig(**LSTM), seed=13)
    lstm.fit(data, data)
    models = ModelStore(data_dir)
    version, path = models.next_path()
    Ensemble({"word_sentiment": word, "lstm": lstm}, {"word_sentiment": 0.5, "lstm": 0.5}, settings.label_names,
             info={"data": "synthetic"}).save(path)
    models.set_champion(version, "bootstrap")
    store = SQLiteBufferStore(settings.db_path, settings.label_names)
    old_texts, old_labels = sentences(OLD, 300, 2)
    store.append_batch([SourcedEvent(FeedbackEvent(f"old{i}", t, y, None, None, "old", "en", 0), "t", 0, i)
                        for i, (t, y) in enumerate(zip(old_texts, old_labels))])
    store.set_mark("last_retrain")
    new_texts, new_labels = sentences(NEW, 1500, 3)
    store.append_batch([SourcedEvent(FeedbackEvent(f"new{i}", t, y, None, None, "new", "en", 0), "t", 0, 300 + i)
                        for i, (t, y) in enumerate(zip(new_texts, new_labels))])
    store.close()
    path = data_dir.parent / f"{data_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config(data_dir)))
    return path


def retrain_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "sentiloop", "retrain", "--offline", "--json", "--config", str(config_path)]


def retrain(config_path: Path) -> RetrainSummary:
    done = subprocess.run(retrain_command(config_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return RetrainSummary.model_validate_json(done.stdout)


def kill_during_iteration_2(config_path: Path, data_dir: Path) -> CheckpointManager:
    process = subprocess.Popen(retrain_command(config_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not list((data_dir / "retrain").glob("*/iteration_0001")):
            assert process.poll() is None, "the worker ended before its first checkpoint"
            assert time.monotonic() < deadline, "no iteration checkpoint within 5 minutes"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (run,) = interrupted_runs(data_dir / "retrain")
    assert run.iterations() == [1], "killed after iteration 2 had finished: the iterations are too fast for this test"
    return run


def outcome(summary: RetrainSummary) -> dict[str, Any]:
    """Everything a retrain decides, without what only says how long it took."""
    record = json.loads(summary.to_json(indent=None))
    for iteration in record["iterations"]:
        iteration.pop("durations")
    return {key: record[key] for key in ("status", "version", "stop_reason", "gate_reasons", "gate_metrics", "iterations", "pools")}


@pytest.mark.integration
def test_a_killed_retrain_resumes_from_its_last_checkpoint_with_the_same_result(tmp_path: Path) -> None:
    killed_dir, twin_dir = tmp_path / "killed", tmp_path / "twin"
    killed_config = prepare(killed_dir)
    shutil.copytree(killed_dir, twin_dir)
    twin_config = twin_dir.parent / "twin.yaml"
    twin_config.write_text(yaml.safe_dump(config(twin_dir)))

    run = kill_during_iteration_2(killed_config, killed_dir)
    resumed = retrain(killed_config)
    uninterrupted = retrain(twin_config)

    assert resumed.run_id == run.run_id and resumed.resumed_after_iteration == 1
    assert uninterrupted.resumed_after_iteration is None
    assert resumed.status in (RetrainStatus.PROMOTED, RetrainStatus.REJECTED) and len(resumed.iterations) == 3
    assert outcome(resumed) == outcome(uninterrupted)
    assert run.state()["status"] == "completed" and run.state()["resumed"][0]["after_iteration"] == 1
    texts = sentences(NEW, 200, 9)[0]
    assert resumed.version is not None and uninterrupted.version is not None
    a = Ensemble.load(ModelStore(killed_dir).path(resumed.version)).predict_proba(texts)
    b = Ensemble.load(ModelStore(twin_dir).path(uninterrupted.version)).predict_proba(texts)
    np.testing.assert_array_equal(a, b)


def _interrupted_run(tmp_path: Path) -> tuple[Settings, Path, CheckpointManager]:
    config_path = prepare(tmp_path / "data")
    run = kill_during_iteration_2(config_path, tmp_path / "data")
    return Settings.model_validate(config(tmp_path / "data")), config_path, run


@pytest.mark.integration
def test_a_new_champion_means_the_interrupted_run_is_discarded_with_the_reason(tmp_path: Path) -> None:
    settings, config_path, run = _interrupted_run(tmp_path)
    models = ModelStore(settings.data_dir)
    version, path = models.next_path()
    shutil.copytree(models.path(1), path)
    models.set_champion(version, "an operator promoted another model")
    summary = retrain(config_path)
    assert summary.resumed_after_iteration is None and summary.run_id != run.run_id
    assert run.state()["status"] == "discarded" and "the champion changed" in run.state()["discard_reason"]
    assert run.iterations() == []  # its checkpoints are freed


@pytest.mark.integration
def test_changed_pools_mean_the_interrupted_run_is_discarded(tmp_path: Path) -> None:
    settings, _config_path, run = _interrupted_run(tmp_path)
    store = SQLiteBufferStore(settings.db_path, settings.label_names)
    store.set_mark("last_retrain", 400)  # as if another retrain had taken part of the new events
    store.close()
    worker = RetrainWorker.build(settings)
    try:
        summary = worker.run("manual", "after the mark moved", "strategic")
    finally:
        worker.close()
    assert summary.resumed_after_iteration is None
    assert run.state()["status"] == "discarded" and "data pools changed" in run.state()["discard_reason"]
