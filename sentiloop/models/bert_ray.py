"""The BERT member's retrain fine-tune, data-parallel on Ray Train workers (``retrain.ray.bert_workers``).

Same method as the single-process fine-tune (``BertMember.fine_tune_copy``: LP-FT head, differential
learning rates, progressive unfreezing, early stopping), run by ``TorchTrainer`` on N workers that
form one gloo group: each worker walks the same batches, trains on its slice of every batch and the
gradients are averaged before each step (``BertMember._step``), so the workers end with identical
weights. Rank 0 saves the challenger as a member checkpoint (safetensors, no pickle) with its
validation probabilities; the caller loads it like any checkpoint. The workers read the champion and
write the result under the retrain's backup directory: nodes on the same host or a shared data_dir.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiloop.files import atomic_write_json, read_json
from sentiloop.models.base import FitReport, TrainData, WarmStart

if TYPE_CHECKING:
    from sentiloop.models.bert import BertMember

REPORT_FILE = "fit_report.json"
PROBABILITIES_FILE = "validation_probabilities.npy"


def fine_tune_data_parallel(champion: BertMember, train: TrainData, validation: TrainData, budget: WarmStart,
                            workers: int) -> tuple[BertMember, FitReport]:
    """The challenger and its fit report, trained by ``workers`` Ray Train workers (the champion is untouched)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sentiloop.models.bert import BertMember

    assert budget.retrain.ray is not None
    budget.backup_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bert-ray-", dir=budget.backup_dir) as tmp:
        root = Path(tmp)
        champion.save(root / "champion")
        trainer = TorchTrainer(
            _train_on_worker,
            train_loop_config={"champion": str(root / "champion"), "result": str(root / "challenger"), "report": str(root / "report"),
                               "threads": max(1, round(budget.retrain.ray.bert_worker_cpus)),
                               "train": _as_columns(train), "validation": _as_columns(validation)},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                         resources_per_worker={"CPU": budget.retrain.ray.bert_worker_cpus}),
            run_config=RunConfig(storage_path=str(root / "ray-train"), name="bert-fine-tune"),
        )
        trainer.fit()  # raises when a worker failed: the retrain fails, the champion keeps serving
        challenger = BertMember.load(root / "challenger")
        return challenger, _read_report(root / "report")


def _train_on_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the champion's fine-tune on this rank's slices; rank 0 keeps the result."""
    import ray.train

    from sentiloop.models.bert import BertMember
    from sentiloop.runtime import prepare_environment, use_threads

    prepare_environment()
    use_threads(config["threads"])  # its share of the node: workers on one host must not oversubscribe it
    champion = BertMember.load(Path(config["champion"]))
    challenger, report = champion.fine_tune_copy(_from_columns(config["train"]), _from_columns(config["validation"]))
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:
        challenger.save(Path(config["result"]))
        _write_report(Path(config["report"]), report)
    ray.train.report({"rank": rank, "steps": report.steps, "stopped": report.stopped})


def _as_columns(data: TrainData) -> dict[str, Any]:
    return {"texts": list(data.texts), "labels": data.labels.tolist(),
            "weights": None if data.weights is None else data.weights.tolist(),
            "domains": None if data.domains is None else list(data.domains),
            "replay": None if data.replay is None else data.replay.tolist()}


def _from_columns(columns: dict[str, Any]) -> TrainData:
    def array(name: str) -> np.ndarray | None:
        return None if columns[name] is None else np.asarray(columns[name])

    labels = array("labels")
    assert labels is not None
    return TrainData(columns["texts"], labels, weights=array("weights"), domains=columns["domains"], replay=array("replay"))


def _write_report(directory: Path, report: FitReport) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / REPORT_FILE, {k: v for k, v in asdict(report).items() if k != "validation_probabilities"})
    if report.validation_probabilities is not None:
        np.save(directory / PROBABILITIES_FILE, report.validation_probabilities, allow_pickle=False)


def _read_report(directory: Path) -> FitReport:
    report = FitReport(**read_json(directory / REPORT_FILE))
    probabilities = directory / PROBABILITIES_FILE
    if probabilities.exists():
        report.validation_probabilities = np.load(probabilities, allow_pickle=False)
    return report
