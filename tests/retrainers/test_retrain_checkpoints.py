from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from sentiloop.errors import CheckpointError
from sentiloop.models.base import TrainData
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.word_member import WordSentimentMember
from sentiloop.retrainers.checkpoints import CheckpointManager, discard, interrupted_runs

LABELS = ["very_negative", "negative", "neutral", "positive", "very_positive"]


def small_ensemble() -> Ensemble:
    member = WordSentimentMember([-2, -1, 0, 1, 2], min_count=1, seed_lexicon="none")
    data = TrainData(["awful", "bad", "plot", "good", "superb"] * 10, np.array([0, 1, 2, 3, 4] * 10))
    member.fit(data, data)
    return Ensemble({"word_sentiment": member}, {"word_sentiment": 1.0}, LABELS)


def optimizer_state() -> tuple[dict, dict]:
    return {"lstm.weight/exp_avg": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, {"param_groups": [{"lr": 1e-3, "params": ["lstm.weight"]}]}


def test_iterations_are_atomic_verified_and_pruned(tmp_path: Path) -> None:
    manager = CheckpointManager.start(tmp_path, "manual", "test", keep=2)
    ensemble = small_ensemble()
    state = optimizer_state()
    for iteration in (1, 2, 3):
        manager.save_iteration(iteration, ensemble, [{"metrics": {"ensemble": {"validation": 0.5 + iteration / 100}}}],
                               {"bilstm": state}, {"labels": np.arange(4) + iteration, "dropped": np.array([True, False, False, True])})
    assert manager.iterations() == [2, 3]
    assert not [p for p in manager.run_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left
    iteration, loaded, cycle = manager.load_iteration()
    assert iteration == 3 and cycle["metrics"]["ensemble"]["validation"] == pytest.approx(0.53)
    assert np.array_equal(loaded.predict_proba(["good"]), ensemble.predict_proba(["good"]))
    weights = manager.iteration_dir(3) / "optimizers" / "bilstm.safetensors"
    assert np.array_equal(load_file(str(weights))["lstm.weight/exp_avg"], state[0]["lstm.weight/exp_avg"])  # the seed's record
    point = manager.resume_point()
    assert point.iteration == 3 and point.history[-1]["metrics"]["ensemble"]["validation"] == pytest.approx(0.53)
    assert point.refinement["labels"].tolist() == [3, 4, 5, 6] and point.refinement["dropped"].tolist() == [True, False, False, True]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        manager.load_iteration(3)


def test_interrupted_runs_are_found_and_discarded(tmp_path: Path) -> None:
    running = CheckpointManager.start(tmp_path, "drift", "error rate up")
    running.save_iteration(1, small_ensemble(), [{"metrics": {}}])
    done = CheckpointManager.start(tmp_path, "volume", "2000 new")
    done.finish("completed")
    found = interrupted_runs(tmp_path)
    assert [m.run_id for m in found] == [running.run_id]
    discard(found[0], "restart")
    assert running.state()["status"] == "discarded" and running.iterations() == []
    assert interrupted_runs(tmp_path) == []
