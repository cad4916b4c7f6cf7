"""MLflow: the ``ensemble_retraining`` experiment and the ``sentiloop-ensemble`` registered model.

Embedded by default (a sqlite store and an artifact root under ``data_dir/mlflow``), or any tracking
server named in config. Registry aliases ``champion``/``challenger`` (not the deprecated stages) say
which version serves. Telemetry is turned off before mlflow is imported.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentiloop.config import Settings
from sentiloop.runtime import prepare_environment

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = ["sentiloop", "torch==2.13.0", "transformers", "safetensors", "numpy", "pandas", "scikit-learn", "vadersentiment==3.3.2"]


def _quiet_mlflow() -> None:
    prepare_environment()  # already done by the CLI; here for library callers (tests, benchmarks)
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow.tracking_uri:
        return settings.mlflow.tracking_uri
    root = (settings.data_dir / "mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(settings: Settings) -> str | None:
    if settings.mlflow.tracking_uri and settings.mlflow.artifact_root is None:
        return None  # the server decides
    root = (settings.mlflow.artifact_root or settings.data_dir / "mlflow" / "artifacts").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


class Tracker:
    """Thin, typed façade over the mlflow calls sentiloop makes."""

    def __init__(self, settings: Settings) -> None:
        _quiet_mlflow()
        import mlflow

        self.mlflow = mlflow
        self.settings = settings
        self.uri = tracking_uri(settings)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        experiment = self.client.get_experiment_by_name(settings.mlflow.experiment)
        self.experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(settings.mlflow.experiment, artifact_location=artifact_location(settings))
        )

    @contextmanager
    def run(self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[Any]:
        with self.mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags) as active:
            self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            yield active

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifacts(self, directory: Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(directory), artifact_path=artifact_path)

    def register_ensemble(self, ensemble_dir: Path, alias: str | None, description: str = "") -> int:
        """Log the ensemble as a pyfunc model in the active run and register a new version."""
        import pandas as pd

        info = self.mlflow.pyfunc.log_model(
            name="ensemble",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),  # models from code: no pickle
            artifacts={"ensemble": str(ensemble_dir)},
            pip_requirements=PIP_REQUIREMENTS,
            input_example=pd.DataFrame({"text": ["a great film", "a dreadful film"]}),
            registered_model_name=self.settings.mlflow.registered_model,
        )
        version = int(info.registered_model_version)
        if description:
            self.client.update_model_version(self.settings.mlflow.registered_model, str(version), description)
        if alias:
            self.set_alias(alias, version)
        return version

    def set_alias(self, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(self.settings.mlflow.registered_model, alias, str(version))

    def download_ensemble(self, version: int, destination: Path) -> Path:
        """Download registered ``version`` under ``destination``; returns its ensemble directory.

        The directory is the one the pyfunc flavour names in MLmodel (``artifacts/ensemble``), refused
        if it points outside the download: a registry entry is input like any other.
        """
        import yaml

        root = Path(self.mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{self.settings.mlflow.registered_model}/{version}", dst_path=str(destination),
            tracking_uri=self.uri)).resolve()
        spec = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
        relative = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get("ensemble", {}).get("path")
        ensemble = (root / str(relative)).resolve() if relative else None
        if ensemble is None or not ensemble.is_relative_to(root) or not ensemble.is_dir():
            raise ValueError(f"{self.settings.mlflow.registered_model} version {version} is not a sentiloop ensemble "
                             "(its MLmodel names no ensemble artifact)")
        return ensemble

    def alias_version(self, alias: str) -> int | None:
        try:
            return int(self.client.get_model_version_by_alias(self.settings.mlflow.registered_model, alias).version)
        except Exception:  # mlflow raises RestException/MlflowException when the alias does not exist
            return None
