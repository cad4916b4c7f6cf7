"""A retrain run with the Keras LSTM: the seed's transfer, its optimizer in the unified checkpoint, a backend switch.

Needs the tensorflow extra (``pytest -m keras`` in its own venv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from sentiloop.buffer import SQLiteBufferStore
from sentiloop.config import Settings
from sentiloop.models.base import Member, TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.keras_lstm import KerasLSTMMember
from sentiloop.models.registry import spec_for
from sentiloop.models.store import ModelStore
from sentiloop.retrainers.results import RetrainStatus
from sentiloop.retrainers.run import run_retrain
from tests.retrainers.test_retrain_cycle import NEW, OLD, feed, sentences

pytestmark = [pytest.mark.keras, pytest.mark.timeout(900)]
TINY = {"embedding_dim": 16, "hidden_size": 16, "batch_size": 32, "epochs": 3, "min_freq": 1, "pretrained_embeddings": False}


def settings_for(tmp_path: Path, backend: str) -> Settings:
    models: dict[str, Any] = {"enabled": ["lstm"], "lstm": {**TINY, "backend": backend}}
    return Settings.model_validate({
        "data_dir": str(tmp_path), "models": models, "mlflow": {"enabled": False},
        "retrain": {"max_iterations": 1, "min_new_events": 10, "gate": {"min_holdout": 20}},
        "buffer": {"holdout_share": 0.3},
    })


def bootstrap(settings: Settings, champion_backend: str) -> Member:
    """A champion LSTM (of ``champion_backend``) trained on the old words, serving; old events as the golden set."""
    texts, labels = sentences(OLD, 400, 1)
    data = TrainData(texts, np.array(labels))
    lstm = settings.models.lstm.model_copy(update={"backend": champion_backend})
    member = spec_for("lstm").build(settings, settings.models.model_copy(update={"lstm": lstm}))
    member.fit(data, data)
    store = ModelStore(settings.data_dir)
    version, path = store.next_path()
    Ensemble({"lstm": member}, {"lstm": 1.0}, settings.label_names, info={"data": "synthetic"}).save(path)
    store.set_champion(version, "bootstrap")
    feed(settings, *sentences(OLD, 300, 2), prefix="old")
    SQLiteBufferStore(settings.db_path, settings.label_names).set_mark("last_retrain")
    feed(settings, *sentences(NEW, 600, 3), prefix="new")
    return member


def test_a_keras_champion_retrains_by_transfer_and_checkpoints_its_optimizer(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "keras")
    bootstrap(settings, "keras")
    summary = run_retrain(settings, "manual", "test")
    assert summary.status in (RetrainStatus.PROMOTED, RetrainStatus.REJECTED), summary
    assert summary.iterations[0].strategies == {"lstm": "transfer"}
    assert summary.gate_metrics is not None and summary.gate_metrics.of("challenger", "recent") > 0.5  # it learnt the new words
    assert summary.run_id is not None and summary.version is not None
    iteration = tmp_path / "retrain" / summary.run_id / "iteration_0001"
    assert (iteration / "optimizers" / "lstm.safetensors").is_file()  # the seed's model_weights + optimizer record
    challenger = Ensemble.load(ModelStore(tmp_path).path(summary.version))
    assert isinstance(challenger.members["lstm"], KerasLSTMMember)


def test_switching_the_backend_retrains_the_lstm_in_full_with_the_new_one(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "keras")
    bootstrap(settings, "torch")
    summary = run_retrain(settings, "manual", "switched to keras")
    assert summary.iterations[0].strategies == {"lstm": "full"}
    assert summary.version is not None
    assert isinstance(Ensemble.load(ModelStore(tmp_path).path(summary.version)).members["lstm"], KerasLSTMMember)
