"""Domain-shift scenarios from the VADER ground truth, shared by ``sentiloop demo`` and the benchmarks.

A champion is bootstrapped on one domain's sentences only (written as a labelled file, which its
lineage remembers: retrains take replay and the golden set from it), and other domains are then
streamed as feedback. Shuffles are deterministic (sha256 of a salt and the sentence id), so a
scenario is the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiloop.config import Settings
from sentiloop.datasets import Record

if TYPE_CHECKING:
    from sentiloop.training import Profile


def by_domain(records: Iterable[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.domain].append(record)
    return dict(grouped)


def shuffled(records: Iterable[Record], salt: str) -> list[Record]:
    """A deterministic shuffle (sha256 of salt + id): the same on every machine and Python version."""
    return sorted(records, key=lambda r: hashlib.sha256(f"{salt}\x00{r.id}".encode()).digest())


def write_labelled_jsonl(path: Path, records: Sequence[Record], label_names: Sequence[str]) -> Path:
    """A labelled file `sentiloop train --data` accepts; the champion's lineage remembers its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for r in records:
            out.write(json.dumps({"id": r.id, "text": r.text, "label": label_names[r.label], "domain": r.domain},
                                 ensure_ascii=False) + "\n")
    return path


def feedback_event(record: Record, label_names: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """A schema-v1 feedback event for a labelled sentence (event_id = record id, so ids never collide)."""
    return {"event_id": f"{prefix}{record.id}", "text": record.text, "label": label_names[record.label],
            "domain": record.domain}


def profile_overrides(models: Mapping[str, Any], profile: Profile) -> dict[str, Any]:
    """Config overrides that make retrains train with a profile's budget, as ``train --profile`` does.

    Retrains read ``models.*`` (epochs, BERT steps) from the settings, not from the profile, so the
    profile's overrides are written there. The BERT fine-tune's step cap is ``models.bert.fine_tune_max_steps``:
    it gets the profile's cap too, so the strategic and the full retrain have the same BERT budget.
    """
    from sentiloop.training import profile_config

    base = Settings.model_validate({"models": dict(models)})
    tuned = profile_config(base.models, profile).model_dump(mode="json")
    if tuned["bert"]["max_steps"] is not None:
        tuned["bert"]["fine_tune_max_steps"] = tuned["bert"]["max_steps"]
    return {"models": tuned}


def bootstrap_champion(settings: Settings, records: Sequence[Record], profile: Profile, data_file: Path) -> tuple[int, float]:
    """Train the first champion with ``train_ensemble`` on ``records`` only; returns (version, seconds)."""
    from sentiloop.training import train_ensemble

    write_labelled_jsonl(data_file, records, settings.label_names)
    started = time.perf_counter()
    version, _, _ = train_ensemble(settings, profile, str(data_file))
    return version, time.perf_counter() - started
