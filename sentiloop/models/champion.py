"""Moving the champion pointer by hand (promote, rollback): one implementation for the CLI and the daemon."""

from __future__ import annotations

from typing import Any

from sentiloop.config import Settings
from sentiloop.errors import SentiloopError
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.store import ModelStore


def set_champion(settings: Settings, version: int, reason: str) -> dict[str, Any]:
    """Point the champion at ``version`` after checking it loads and verifies; move the MLflow alias too."""
    store = ModelStore(settings.data_dir)
    Ensemble.load(store.path(version))  # refuse a missing or tampered version before pointing at it
    previous = store.champion()
    store.set_champion(version, reason)
    registered = store.registered_version(version)
    if settings.mlflow.enabled and registered is not None:
        from sentiloop.monitoring.tracking import Tracker

        Tracker(settings).set_alias("champion", registered)
    return {"champion": version, "previous": previous, "registry_version": registered, "reason": reason}


def rollback(settings: Settings, reason: str) -> dict[str, Any]:
    previous = ModelStore(settings.data_dir).previous_champion()
    if previous is None:
        raise SentiloopError("there is no previous champion to roll back to")
    return set_champion(settings, previous, reason)
