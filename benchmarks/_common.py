"""Helpers shared by the learning benchmarks (``drift.py``, ``retrain_cost.py``).

Why a module: both need the same things done the same way — the VADER ground truth read from a local
cache (never a download), a deterministic partition of its sentences, a champion bootstrapped on a
chosen subset through the library's own ``train_ensemble``, accuracy of a stored version on held-out
records, and the same table/JSON output as ``benchmarks/ingest.py``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sentiloop.config import deep_merge
from sentiloop.datasets import Record, load_vader_ground_truth, vader_cache_dir
from sentiloop.models.registry import MEMBER_NAMES, in_training_order
from sentiloop.runtime import prepare_environment, use_threads
from sentiloop.scenario import bootstrap_champion, by_domain, feedback_event, shuffled, write_labelled_jsonl
from sentiloop.scenario import profile_overrides as scenario_profile_overrides

__all__ = ["bootstrap_champion", "by_domain", "deep_merge", "feedback_event", "shuffled", "write_labelled_jsonl"]  # re-exported for the scripts

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DATASETS = REPO / "sentiloop-data" / "datasets"  # where `sentiloop data fetch` caches it
MEMBERS = tuple(in_training_order(MEMBER_NAMES))
OMP_NOTE = (
    "note: OMP_WAIT_POLICY=PASSIVE is set by default (inherited by the daemon and retrain workers): with torch's "
    "default active wait, 2 threads on 2 oversubscribed cores ran LSTM inference over 100x slower on this machine; set OMP_WAIT_POLICY "
    "yourself to override"
)

log = logging.getLogger("benchmarks")


# -- data ----------------------------------------------------------------------------------------
def vader_records(datasets: Path) -> list[Record]:
    """The VADER ground truth (5 default classes) from a local ``datasets`` folder; never fetches."""
    root = datasets.resolve().parent
    if not (vader_cache_dir(root) / "manifest.json").is_file():
        raise SystemExit(
            f"no VADER cache under {datasets} (expected {vader_cache_dir(root)}): run `sentiloop data fetch` "
            "once, or pass --datasets DIR pointing at a `datasets` folder that holds vader_gt/"
        )
    return load_vader_ground_truth(root, fetch=False)


# -- settings, bootstrap, evaluation -------------------------------------------------------------
def bench_config(data_dir: Path, members: Sequence[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Library defaults, except: these members, no MLflow (its 3–9 s per run is not what we measure)."""
    base = {"data_dir": str(data_dir), "models": {"enabled": list(members)}, "mlflow": {"enabled": False}}
    return deep_merge(base, overrides or {})


def profile_overrides(data_dir: Path, members: Sequence[str], profile: str) -> dict[str, Any]:
    """The profile's training budget for retrains of these members (see sentiloop.scenario)."""
    return scenario_profile_overrides(bench_config(data_dir, members)["models"], profile)


def load_version(data_dir: Path, version: int, members: Sequence[str] | None = None) -> Any:
    from sentiloop.models.ensemble import Ensemble
    from sentiloop.models.store import ModelStore

    return Ensemble.load(ModelStore(data_dir).path(version), only=members)


def predictions(ensemble: Any, records: Sequence[Record], batch: int = 256) -> np.ndarray:
    texts = [r.text for r in records]
    parts = [ensemble.predict_proba(texts[i : i + batch]).argmax(axis=1) for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def accuracy(ensemble: Any, records: Sequence[Record]) -> float:
    labels = np.array([r.label for r in records])
    return float(np.mean(predictions(ensemble, records) == labels)) if len(labels) else float("nan")


def configure_threads(threads: int) -> None:
    """A benchmark is a process entry: the environment defaults and torch's threads are set here."""
    prepare_environment()
    use_threads(threads)


# -- output --------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> None:
    """A plain fixed-width table: columns in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    print(f"\n{title}\n{line}\n{fmt(header)}\n{line}")
    for row in rows:
        print(fmt(row))
    print(line)


def machine_info() -> dict[str, Any]:
    """What the timings depend on; a load average above the CPU count means other work shared them."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "river": metadata.version("river"),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


def load_note(machine: Mapping[str, Any]) -> str:
    if machine["loadavg_1m_at_end"] > (machine["cpus_usable"] or 1):
        return f"note: load average {machine['loadavg_1m_at_end']} > {machine['cpus_usable']} CPUs: other processes shared the machine"
    return ""


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def plain_args(args: Any) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
