"""The typed result of a retrain run: what the worker writes, the daemon reads, the CLI prints and the benchmarks record.

One JSON form: ``RetrainSummary.to_json()`` / ``RetrainSummary.from_json(text)``; the run's ``state.json``
keeps ``record()``, the same thing as a dict. A worker output that cannot be read back (missing, cut
short, not a summary) becomes a ``failed`` summary that says so (``RetrainSummary.read``).

Accuracy is nested ``{member or "ensemble": {split: value}}`` (the gate's: ``{"champion" | "challenger":
{split: value}}``); the flat names MLflow and the promotion record use (``bert_golden_accuracy``, the
held-out folds' ``bert_accuracy``) are built from it in one place, ``flat_metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

ENSEMBLE: Final = "ensemble"
VALIDATION: Final = "validation"  # the iteration's held-out folds: ensemble weights, early stopping, convergence
GOLDEN: Final = "golden"  # the original distribution (the forgetting check)
RECENT: Final = "recent"  # the recent-feedback holdout, never trained on
Split = Literal["validation", "golden", "recent"]
Role = Literal["champion", "challenger"]
Accuracy = dict[str, dict[Split, float]]  # member or "ensemble" → split → accuracy
Owner = TypeVar("Owner", bound=str)  # whose accuracy: a member, "ensemble", or the gate's role


def flat_name(owner: str, split: Split) -> str:
    """``bert_golden_accuracy``; on the held-out folds the split is left out: ``ensemble_accuracy``."""
    return f"{owner}_accuracy" if split == VALIDATION else f"{owner}_{split}_accuracy"


def flat_metrics(accuracy: Mapping[Owner, Mapping[Split, float]]) -> dict[str, float]:
    """Nested accuracy as flat ``{flat_name: value}`` (MLflow metric names)."""
    return {flat_name(owner, split): value for owner, splits in accuracy.items() for split, value in splits.items()}


class RetrainStatus(StrEnum):
    PROMOTED = "promoted"  # the gate agreed: the challenger is the champion now
    REJECTED = "rejected"  # the gate refused: the challenger is saved, the champion keeps serving
    SKIPPED = "skipped"  # too little new labelled data: nothing was trained
    FAILED = "failed"  # the run raised, the worker died, or its output could not be read
    SHADOW = "shadow"  # the gate agreed; retrain.shadow asks for a shadow run on live traffic before promotion


class _Frozen(BaseModel):
    # NaN (an empty split's accuracy) and inf (a balance ratio) survive the round trip as JSON constants.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class RefinementStats(_Frozen):
    """What one iteration's refinement flagged (``refined_samples`` of ``pool`` scored examples)."""

    refinement_rate: float
    data_quality_score: float
    refined_samples: int
    pool: int
    kept: int | None = None
    action: str | None = None  # retrain.refinement_action applied to the flagged examples
    candidates: int | None = None  # examples the reference had not trained on


class Balance(_Frozen):
    """Each member's contribution to the vote and the max/min ratio (``flagged`` above the limit)."""

    contributions: dict[str, float]
    ratio: float
    flagged: bool


class BiasFinding(_Frozen):
    name: str
    bias_score: float
    flagged: bool
    description: str


class IterationResult(_Frozen):
    """One refine → retrain → evaluate iteration."""

    iteration: int
    metrics: Accuracy  # {"ensemble" | member: {"validation" | "golden" | "recent": accuracy}}
    prediction_variance: float  # share of held-out texts the members disagree on
    refinement: RefinementStats
    weights: dict[str, float]
    balance: Balance
    bias: tuple[BiasFinding, ...]
    durations: dict[str, float]  # member → seconds
    strategies: dict[str, str]  # member → the strategy it was retrained with
    stop_reason: str | None = None  # why the convergence rules stopped the cycle here

    def accuracy(self, owner: str = ENSEMBLE, split: Split = VALIDATION) -> float:
        """``owner``'s accuracy on ``split`` (NaN where it was not measured: an empty pool)."""
        return self.metrics.get(owner, {}).get(split, float("nan"))

    def mlflow_metrics(self) -> dict[str, float]:
        """The flat per-iteration metrics logged to MLflow (``ensemble_accuracy``, ``lstm_recent_accuracy``, ...)."""
        return {**flat_metrics(self.metrics), "refinement_rate": self.refinement.refinement_rate,
                "data_quality_score": self.refinement.data_quality_score, "prediction_variance": self.prediction_variance}


class GateMetrics(_Frozen):
    """What the promotion gate compared."""

    accuracy: dict[Role, dict[Split, float]]  # {"champion" | "challenger": {"golden" | "recent": accuracy}}
    recent_holdout_size: int
    golden_reference: float  # the golden accuracy the challenger is held to: the champion's or its lineage's best

    def of(self, role: Role, split: Split) -> float:
        return self.accuracy[role][split]

    def gain(self, split: Split) -> float:
        """Challenger minus champion accuracy on ``split``."""
        return self.of("challenger", split) - self.of("champion", split)

    def flat(self) -> dict[str, float]:
        """``champion_golden_accuracy``, ..., ``recent_holdout_size``, ``golden_reference`` (MLflow ``gate_*``, the promotion record)."""
        return {**flat_metrics(self.accuracy), "recent_holdout_size": float(self.recent_holdout_size),
                "golden_reference": self.golden_reference}


class PoolSizes(_Frozen):
    """The data a run was given: labelled events per pool and the buffer range of the new ones."""

    new: int
    replay: int
    recent_holdout: int
    golden: int
    since_seq: int
    until_seq: int


class RetrainSummary(_Frozen):
    """The outcome of one retrain run."""

    status: RetrainStatus
    trigger: str = ""
    reason: str = ""  # why it was started
    run_id: str | None = None
    seconds: float | None = None
    version: int | None = None  # the challenger's version (promoted or not)
    registered_version: int | None = None  # its MLflow registry version
    champion_before: int | None = None
    stop_reason: str | None = None
    gate_reasons: tuple[str, ...] = ()  # every rule the challenger failed (empty when promoted)
    gate_metrics: GateMetrics | None = None
    iterations: tuple[IterationResult, ...] = ()
    pools: PoolSizes | None = None
    why: str | None = None  # skipped: why nothing was trained
    error: str | None = None  # failed: what went wrong
    exit_code: int | None = None  # the worker process's, when the daemon ran it
    resumed_after_iteration: int | None = None  # a run a killed worker left: it went on after this checkpoint
    shadow: dict[str, Any] | None = None  # the shadow run's report (ShadowReport.as_dict), once it decided

    @model_validator(mode="after")
    def _complete(self) -> RetrainSummary:
        if self.status is RetrainStatus.FAILED and not self.error:
            raise ValueError("a failed retrain summary needs its error")
        if self.status is RetrainStatus.SKIPPED and not self.why:
            raise ValueError("a skipped retrain summary needs its why")
        if self.status in (RetrainStatus.PROMOTED, RetrainStatus.REJECTED, RetrainStatus.SHADOW) and (self.version is None or self.gate_metrics is None):
            raise ValueError(f"a {self.status} retrain summary needs the challenger's version and the gate metrics")
        return self

    @classmethod
    def failed(cls, error: str, trigger: str = "", reason: str = "", exit_code: int | None = None) -> RetrainSummary:
        return cls(status=RetrainStatus.FAILED, trigger=trigger, reason=reason, error=error, exit_code=exit_code)

    @property
    def last_iteration(self) -> IterationResult | None:
        return self.iterations[-1] if self.iterations else None

    @property
    def verdict_reasons(self) -> list[str]:
        """Why it ended as it did: the gate's reasons, else why it was skipped or how it failed."""
        return list(self.gate_reasons) or [text for text in (self.why, self.error) if text]

    # -- the JSON form ---------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> RetrainSummary:
        """Strict: raises ``pydantic.ValidationError`` (a ``ValueError``) on anything but a summary."""
        return cls.model_validate_json(text)

    def record(self) -> dict[str, Any]:
        """The JSON form as a dict (for ``state.json`` and other JSON documents)."""
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> RetrainSummary:
        """The summary a worker wrote to ``path``; never raises: unreadable output is a ``failed`` summary."""
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return cls.failed(f"unreadable worker output {path.name}: {' '.join(str(exc).split())[:500]}")
