"""A replica with its own data_dir follows the registry's champion alias, on a real MLflow store that
two data_dirs share (the way replicas share a tracking server): the first look serves the champion,
a moved alias is downloaded, verified and served, a local promotion in flight is not undone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sentiloop.config import Settings
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.follow import RegistryFollower
from sentiloop.models.store import ModelStore
from sentiloop.monitoring.tracking import Tracker
from sentiloop.runtime import _DAEMON_ENVIRONMENT_DEFAULTS, prepare_daemon_environment, worker_environment
from tests.retrainers.test_retrain_cycle import NEW, OLD, word_champion


def replica(root: Path, name: str) -> Settings:
    return Settings.model_validate({"data_dir": str(root / name), "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
                                    "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": str(root / "artifacts")}})


def register(settings: Settings, vocab: dict[int, list[str]], alias: str) -> int:
    version, path = word_champion(settings, vocab, n=200)
    store = ModelStore(settings.data_dir)
    tracker = Tracker(settings)
    with tracker.run(f"v{version}", {}):
        registered = tracker.register_ensemble(path, alias)
    store.record_registration(version, registered)
    return registered


def test_a_replica_follows_the_champion_alias_and_keeps_its_own_promotion(tmp_path: Path) -> None:
    leader, follower_settings = replica(tmp_path, "leader"), replica(tmp_path, "follower")
    first = register(leader, OLD, "champion")
    models = ModelStore(follower_settings.data_dir)
    follower = RegistryFollower(follower_settings, models, interval_s=5)
    assert follower.follow()  # an empty data_dir: the champion is downloaded at the first look
    assert models.champion() == 1 and models.registered_version(1) == first
    assert list(Ensemble.load(models.path(1)).members) == ["word_sentiment"]
    assert not follower.follow()  # the alias did not move
    second = register(leader, NEW, "champion")
    assert follower.follow() and models.champion() == 2 and models.registered_version(2) == second
    models.path(3).mkdir()
    models.set_champion(3, "a promotion whose alias is not moved yet")
    assert not follower.follow() and models.champion() == 3  # the alias did not move: nothing undone
    Tracker(leader).set_alias("champion", first)  # rollback in the registry: served again, not downloaded twice
    follower.busy = lambda: True  # this replica's own retrain is writing a version: wait
    assert not follower.follow() and models.champion() == 3
    follower.busy = lambda: False
    assert follower.follow() and models.champion() == 1 and models.versions() == [1, 2, 3]


def test_an_unreachable_registry_costs_the_daemon_seconds_and_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    prepare_daemon_environment()  # what `sentiloop run` does first
    for name in _DAEMON_ENVIRONMENT_DEFAULTS:
        monkeypatch.setenv(name, os.environ[name])  # undone after the test
    settings = Settings.model_validate({"data_dir": str(tmp_path), "mlflow": {"tracking_uri": "http://127.0.0.1:9"}})
    follower = RegistryFollower(settings, ModelStore(tmp_path), interval_s=1)
    started = time.monotonic()
    assert not follower.follow() and not follower.follow()
    assert time.monotonic() - started < 30
    assert caplog.text.count("cannot follow the registry's champion alias") == 1
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in worker_environment()  # the worker keeps MLflow's patient defaults
