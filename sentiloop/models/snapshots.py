"""Versioned JSON snapshots of the word-sentiment dictionary, with one backup file per version.

The seed keeps ``word_sentiment_dict_iter_N`` backups; we keep ``word_sentiment_dict_vNNNNNN.json``
for every snapshot (the newest ``keep`` of them) plus ``word_sentiment_dict.json`` = the latest.
Each file carries its own sha256 of the word table, checked when loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_write_json, read_json
from sentiloop.models.word_sentiment import WordSentimentModel

LATEST = "word_sentiment_dict.json"
_VERSIONED = re.compile(r"^word_sentiment_dict_v(\d{6})\.json$")


def _digest(model_state: dict[str, Any]) -> str:
    canonical = json.dumps(model_state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DictionarySnapshots:
    """Write and read dictionary snapshots in one directory."""

    def __init__(self, directory: Path, keep: int = 20) -> None:
        self.directory = directory
        self.keep = keep

    def versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _VERSIONED.match(p.name)))

    def path_for(self, version: int) -> Path:
        return self.directory / f"word_sentiment_dict_v{version:06d}.json"

    def write(self, model: WordSentimentModel, **info: Any) -> tuple[int, Path]:
        """Write the next version (backup + latest); prune backups beyond ``keep``."""
        versions = self.versions()
        version = (versions[-1] + 1) if versions else 1
        state = model.to_dict()
        document = {"version": version, "created_ms": int(time.time() * 1000), "sha256": _digest(state), "info": info, "model": state}
        path = self.path_for(version)
        atomic_write_json(path, document)
        atomic_write_json(self.directory / LATEST, document)
        for old in versions[: max(0, len(versions) + 1 - self.keep)]:
            self.path_for(old).unlink(missing_ok=True)
        return version, path

    def load(self, path: Path | None = None) -> tuple[int, WordSentimentModel]:
        """Load a snapshot (default: the latest), refusing a malformed or tampered file."""
        path = path or self.directory / LATEST
        document = read_json(path, f"no dictionary snapshot at {path}")
        try:
            state = document["model"]
            if _digest(state) != document["sha256"]:
                raise CheckpointError(f"dictionary snapshot {path} fails its sha256 check (modified or truncated)")
            return int(document["version"]), WordSentimentModel.from_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"dictionary snapshot {path} is malformed: {exc!r}") from None
