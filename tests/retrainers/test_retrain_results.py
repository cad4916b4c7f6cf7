"""The typed retrain results: one JSON form (worker → daemon), unreadable output → failed, nested metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from sentiloop.buffer import SQLiteBufferStore
from sentiloop.config import Settings
from sentiloop.daemon.continual import RetrainController, Worker
from sentiloop.monitoring.drift_monitor import DriftMonitor
from sentiloop.monitoring.metrics import IngestMetrics
from sentiloop.retrainers.gate import promotion_gate
from sentiloop.retrainers.results import (
    Balance,
    BiasFinding,
    GateMetrics,
    IterationResult,
    PoolSizes,
    RefinementStats,
    RetrainStatus,
    RetrainSummary,
    flat_name,
)


def iteration(n: int = 1, recent: float = 0.7) -> IterationResult:
    return IterationResult(
        iteration=n,
        metrics={"ensemble": {"validation": 0.6, "golden": 0.55, "recent": recent},
                 "lstm": {"validation": 0.5, "golden": float("nan"), "recent": 0.65}},
        prediction_variance=0.2,
        refinement=RefinementStats(refinement_rate=0.1, data_quality_score=0.9, refined_samples=3, pool=30, kept=30,
                                   action="relabel", candidates=30),
        weights={"lstm": 1.0}, balance=Balance(contributions={"lstm": 1.0}, ratio=float("inf"), flagged=False),
        bias=(BiasFinding(name="label_distribution", bias_score=0.1, flagged=False, description="ok"),),
        durations={"lstm": 12.5}, strategies={"lstm": "transfer"}, stop_reason=None)


def gate_metrics(champion_recent: float = 0.5, challenger_recent: float = 0.7) -> GateMetrics:
    return GateMetrics(accuracy={"champion": {"golden": 0.56, "recent": champion_recent},
                                 "challenger": {"golden": 0.55, "recent": challenger_recent}},
                       recent_holdout_size=120, golden_reference=0.56)


def rejected() -> RetrainSummary:
    return RetrainSummary(
        status=RetrainStatus.REJECTED, trigger="drift", reason="error_rate up", run_id="20250101-000000-abcdef", seconds=12.3,
        version=3, registered_version=None, champion_before=2, stop_reason="reached max_iterations (1)",
        gate_reasons=("recent-holdout accuracy gain +0.0010 < min_delta 0.005",), gate_metrics=gate_metrics(),
        iterations=(iteration(),), pools=PoolSizes(new=300, replay=150, recent_holdout=120, golden=400, since_seq=0, until_seq=900))


def test_summary_round_trips_through_its_json_form() -> None:
    summary = rejected()
    text = summary.to_json()
    back = RetrainSummary.from_json(text)
    assert back.to_json() == text  # NaN and inf survive as JSON constants
    assert math.isnan(back.iterations[0].metrics["lstm"]["golden"]) and back.iterations[0].balance.ratio == math.inf
    assert back.model_dump(exclude={"iterations"}) == summary.model_dump(exclude={"iterations"})
    assert json.loads(text)["status"] == "rejected"  # plain JSON for any other reader
    assert RetrainSummary.model_validate(json.loads(json.dumps(summary.record()))).to_json() == text  # state.json's dict form
    with pytest.raises(ValidationError):  # frozen
        summary.version = 4


def test_status_is_a_string_enum_with_the_five_outcomes() -> None:
    assert [s.value for s in RetrainStatus] == ["promoted", "rejected", "skipped", "failed", "shadow"]
    assert RetrainStatus("skipped") is RetrainStatus.SKIPPED
    assert str(RetrainStatus.PROMOTED) == "promoted" == RetrainStatus.PROMOTED  # usable as a Prometheus label
    with pytest.raises(ValidationError):
        RetrainSummary.from_json('{"status": "exploded"}')


def test_each_status_carries_what_explains_it() -> None:
    skipped = RetrainSummary(status=RetrainStatus.SKIPPED, trigger="volume", why="3 new labelled events < retrain.min_new_events 10")
    assert skipped.verdict_reasons == ["3 new labelled events < retrain.min_new_events 10"]
    assert RetrainSummary.failed("boom", trigger="manual").verdict_reasons == ["boom"]
    assert rejected().verdict_reasons == list(rejected().gate_reasons)
    for incomplete in ({"status": "failed"}, {"status": "skipped"}, {"status": "promoted", "version": 2}):
        with pytest.raises(ValidationError):
            RetrainSummary.model_validate(incomplete)


@pytest.mark.parametrize("content", [None, "", '{"status": "promo', "[1, 2]", '{"status": "rejected", "version": 2}',
                                     json.dumps({"status": "rejected", "version": 2, "gate_metrics": {"champion_golden_accuracy": 0.5}})])
def test_unreadable_worker_output_is_a_failed_summary(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "worker-1.json"
    if content is not None:
        path.write_text(content)
    summary = RetrainSummary.read(path)  # never raises
    assert summary.status is RetrainStatus.FAILED
    assert summary.error is not None and summary.error.startswith("unreadable worker output worker-1.json")
    assert "\n" not in summary.error


def test_metrics_are_nested_and_flattened_in_one_place() -> None:
    it = iteration()
    assert it.accuracy() == 0.6 and it.accuracy("lstm", "recent") == 0.65 and math.isnan(it.accuracy("bert", "golden"))
    assert flat_name("ensemble", "validation") == "ensemble_accuracy" and flat_name("bert", "golden") == "bert_golden_accuracy"
    flat = it.mlflow_metrics()
    assert flat["ensemble_accuracy"] == 0.6 and flat["lstm_recent_accuracy"] == 0.65 and flat["ensemble_golden_accuracy"] == 0.55
    assert {"refinement_rate", "data_quality_score", "prediction_variance", "lstm_accuracy"} <= set(flat)
    gate = gate_metrics()
    assert gate.gain("recent") == pytest.approx(0.2)
    assert gate.flat() == {"champion_golden_accuracy": 0.56, "champion_recent_accuracy": 0.5, "challenger_golden_accuracy": 0.55,
                           "challenger_recent_accuracy": 0.7, "recent_holdout_size": 120.0, "golden_reference": 0.56}


def test_the_gate_reports_nested_accuracy() -> None:
    labels = np.arange(100) % 3
    right, wrong = np.eye(3)[labels], np.eye(3)[(labels + 1) % 3]
    result = promotion_gate(right, right, labels, wrong, right, labels)
    assert result.promote
    assert result.metrics.accuracy == {"champion": {"golden": 1.0, "recent": 0.0}, "challenger": {"golden": 1.0, "recent": 1.0}}
    assert result.metrics.recent_holdout_size == 100 and result.metrics.golden_reference == 1.0


class Exited:
    def __init__(self, code: int) -> None:
        self.returncode, self.pid = code, 4242

    def poll(self) -> int:
        return self.returncode

    def terminate(self) -> None:
        pass


def controller(tmp_path: Path) -> RetrainController:
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    store = SQLiteBufferStore(tmp_path / "buffer.sqlite3", settings.label_names, None)
    metrics = IngestMetrics()
    return RetrainController(settings, store, metrics, DriftMonitor(settings.retrain.drift, len(settings.labels), metrics))


def finish(c: RetrainController, tmp_path: Path, content: str | None, code: int = 0) -> RetrainSummary:
    output = tmp_path / "retrain" / f"worker-{len(c.outcomes)}.json"
    output.parent.mkdir(exist_ok=True)
    if content is not None:
        output.write_text(content)
    c._finish(Worker(Exited(code), output, "drift", 0.0))
    return c.outcomes[-1]


def sample(c: RetrainController, name: str, **labels: str) -> Any:
    return c.metrics.registry.get_sample_value(name, labels)


def test_the_controller_reads_the_workers_summary_and_exports_nested_metrics(tmp_path: Path) -> None:
    c = controller(tmp_path)
    outcome = finish(c, tmp_path, rejected().to_json())
    assert outcome.status is RetrainStatus.REJECTED and outcome.trigger == "drift" and outcome.exit_code == 0
    assert outcome.gate_metrics == gate_metrics()
    assert [it.model_dump_json() for it in outcome.iterations] == [it.model_dump_json() for it in rejected().iterations]  # NaN != NaN
    assert sample(c, "sentiloop_retrain_runs_total", trigger="drift", status="rejected") == 1
    assert sample(c, "sentiloop_model_accuracy", member="ensemble", split="challenger_recent") == 0.7
    assert sample(c, "sentiloop_model_accuracy", member="lstm", split="challenger_recent") == 0.65
    assert sample(c, "sentiloop_model_accuracy", member="ensemble", split="challenger_validation") is None  # golden/recent only
    assert sample(c, "sentiloop_refinement_rate") == 0.1
    recent = c.status()["recent_outcomes"][-1]
    assert recent == {"status": "rejected", "trigger": "drift", "version": 3, "gate_reasons": list(rejected().gate_reasons),
                      "seconds": outcome.seconds, "error": None}


def test_the_controller_records_unreadable_output_and_a_crash_as_failed(tmp_path: Path) -> None:
    c = controller(tmp_path)
    garbled = finish(c, tmp_path, '{"status": "promoted", "vers')
    assert garbled.status is RetrainStatus.FAILED and "unreadable worker output" in (garbled.error or "")
    crashed = finish(c, tmp_path, None, code=-9)
    assert crashed.status is RetrainStatus.FAILED and "exited with code -9" in (crashed.error or "") and crashed.exit_code == -9
    assert sample(c, "sentiloop_retrain_runs_total", trigger="drift", status="failed") == 2
    assert json.loads(json.dumps(c.status()["recent_outcomes"]))[-1]["status"] == "failed"


def test_cli_retrain_json_is_the_summary_the_daemon_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sentiloop.cli import main
    from tests.retrainers.test_retrain_cycle import NEW, bootstrap, feed, sentences, settings_for

    settings = settings_for(tmp_path)
    bootstrap(settings)
    feed(settings, *sentences(NEW, 600, 3), prefix="new")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "models": {"enabled": ["word_sentiment"], "word_sentiment_lexicon": "none"},
                                      "mlflow": {"enabled": False}, "buffer": {"holdout_share": 0.3},
                                      "retrain": {"max_iterations": 1, "min_new_events": 10, "gate": {"min_holdout": 20}}}))
    assert main(["retrain", "--config", str(config), "--offline", "--json"]) == 0
    summary = RetrainSummary.from_json(capsys.readouterr().out)
    assert summary.status is RetrainStatus.PROMOTED and summary.version == 2 and len(summary.iterations) == 1
    assert set(summary.iterations[0].metrics["word_sentiment"]) == {"validation", "golden", "recent"}
    assert main(["retrain", "--config", str(config), "--offline"]) == 0
    assert "retrain skipped:" in capsys.readouterr().out
