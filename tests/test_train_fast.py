"""`sentiloop train --profile fast` → `eval` → `predict` on the real VADER ground truth, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# ~3 minutes on 2 idle cores; the generous timeout covers a machine shared with other work.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def cli(data_dir: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SENTILOOP_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "sentiloop", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_fast_profile_trains_evaluates_predicts_and_registers(vader_data_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(vader_data_dir / "datasets", data_dir / "datasets")
    trained = cli(data_dir, "train", "--profile", "fast")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "trained ensemble v0001" in trained.stdout
    assert "vote chosen on validation:" in trained.stdout
    vote = json.loads((data_dir / "models" / "v0001" / "ensemble.json").read_text())["info"]["vote"]
    voting = [name for name in ("word_sentiment", "lstm", "bilstm", "bert") if name not in vote["excluded"]]
    assert voting, vote
    served = vote["validation_accuracy"][vote["chosen"]]
    assert served >= max(vote["validation_accuracy"][name] for name in voting)  # never worse than its best member
    assert served >= vote["validation_accuracy"]["seed weights"]

    evaluated = cli(data_dir, "eval", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    reports = result["reports"]
    assert set(reports) == {"word_sentiment", "lstm", "bilstm", "bert", "ensemble"}
    majority = 6533 / 23703  # the largest class (positive) over the whole dataset
    for name, report in reports.items():
        assert report["accuracy"] > majority + 0.03, (name, report["accuracy"])
        assert set(report["per_domain_accuracy"]) == {"tweets", "movies", "amazon", "nyt"}
        assert 0 <= report["ece"] <= 1
    # Chosen on validation; on the (other) test split it may differ by sampling noise (±1 point at 2,370 texts).
    assert reports["ensemble"]["accuracy"] >= max(r["accuracy"] for name, r in reports.items() if name != "ensemble") - 0.01
    predicted = cli(data_dir, "predict", "--json", "What a wonderful, moving film!", "Terrible. A waste of money.")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = json.loads(predicted.stdout)
    assert rows[0]["ensemble"]["label"] in ("positive", "very_positive")
    assert rows[1]["ensemble"]["label"] in ("negative", "very_negative")

    import mlflow

    from sentiloop.config import Settings
    from sentiloop.monitoring.tracking import Tracker

    tracker = Tracker(Settings(data_dir=data_dir))
    assert tracker.alias_version("champion") == 1
    model = mlflow.pyfunc.load_model("models:/sentiloop-ensemble@champion")
    import pandas as pd

    assert list(model.predict(pd.DataFrame({"text": ["great"]})).columns)[0] == "label"
