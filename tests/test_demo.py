"""`sentiloop demo` end to end, as CI runs it (non-interactive), on a small scenario: a champion is
trained, the stream goes through the embedded broker and the real daemon, a report and a plot come out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_whole_loop_non_interactively(tmp_path: Path, vader_data_dir: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {vader_data_dir}\n")
    demo = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "sentiloop", "demo", "--config", str(config), "--data-dir", str(demo), "--members", "word_sentiment",
         "--stable-events", "600", "--shift-events", "1500", "--held-out", "200", "--rate", "400", "--port", "0",
         "--non-interactive", "--no-keep-running"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "streaming 600 labelled movies" in out and "streaming 1500 labelled tweets" in out
    assert "DRIFT: signal" in out  # the shift is noticed
    assert "GATE:" in out  # and a retrain is judged
    assert "accuracy on held-out sentences" in out and "tweets" in out
    assert (demo / "demo.png").stat().st_size > 10_000
    assert "/v1/status" in out and "mlflow ui --backend-store-uri" in out
    assert not (demo / "daemon.json").exists()  # stopped cleanly


def test_each_demo_run_in_one_data_dir_gets_its_own_event_ids(tmp_path: Path) -> None:
    from sentiloop.demo import next_run_prefix

    assert [next_run_prefix(tmp_path) for _ in range(3)] == ["demo-", "demo-run2-", "demo-run3-"]
