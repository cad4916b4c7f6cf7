"""Ensemble versions on disk under ``data_dir/models``: ``v0001/``, ``v0002/`` … and the champion pointer.

``champion.json`` names the serving version and keeps the history of changes, so ``rollback`` can
go back to the previous champion. Pointer writes are atomic (temp file + rename).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_write_json, read_json

_VERSION = re.compile(r"^v(\d{4,})$")
CHAMPION = "champion.json"
REGISTRY = "registry.json"  # local version → MLflow model-registry version


class ModelStore:
    """Numbered ensemble checkpoints plus which one is champion."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "models"

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name)))

    def path(self, version: int) -> Path:
        return self.root / f"v{version:04d}"

    def next_path(self) -> tuple[int, Path]:
        versions = self.versions()
        version = versions[-1] + 1 if versions else 1
        return version, self.path(version)

    def _pointer(self) -> dict[str, Any]:
        file = self.root / CHAMPION
        if not file.exists():
            return {"champion": None, "history": []}
        return read_json(file)

    def champion(self) -> int | None:
        return self._pointer()["champion"]

    def champion_path(self) -> Path:
        version = self.champion()
        if version is None:
            raise CheckpointError(f"no champion ensemble under {self.root}: run `sentiloop train` first")
        return self.path(version)

    def set_champion(self, version: int, reason: str) -> None:
        if not self.path(version).is_dir():
            raise CheckpointError(f"version {version} does not exist under {self.root} (have {self.versions()})")
        pointer = self._pointer()
        pointer["history"].append({"version": version, "previous": pointer["champion"], "reason": reason, "at_ms": int(time.time() * 1000)})
        pointer["champion"] = version
        atomic_write_json(self.root / CHAMPION, pointer)

    def _registrations(self) -> dict[str, int]:
        """Local version (as text) → MLflow model-registry version."""
        file = self.root / REGISTRY
        return read_json(file) if file.exists() else {}

    def record_registration(self, version: int, registered: int) -> None:
        """Remember which MLflow model-registry version a local version was registered as."""
        mapping = self._registrations()
        mapping[str(version)] = registered
        atomic_write_json(self.root / REGISTRY, mapping)

    def registered_version(self, version: int) -> int | None:
        return self._registrations().get(str(version))

    def local_version(self, registered: int) -> int | None:
        """The local version that MLflow registry version ``registered`` is (None: not here yet)."""
        return next((int(local) for local, reg in self._registrations().items() if reg == registered and self.path(int(local)).is_dir()),
                    None)

    def previous_champion(self) -> int | None:
        """The champion before the current one (for rollback)."""
        history = self._pointer()["history"]
        return history[-1]["previous"] if history else None
