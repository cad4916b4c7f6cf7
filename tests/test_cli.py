import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentiloop.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentiloop", *args], capture_output=True, text=True)


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    start = time.perf_counter()
    result = run_cli("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "replay" in result.stdout and "status" in result.stdout
    assert elapsed < 2.0
    probe = ("import sys, sentiloop.cli; "
             "print(sorted(m for m in ('torch','transformers','mlflow','kafka','numpy','tensorflow','keras') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_config_validate_reports_key_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("kafka:\n  topic: reviews\n")
    assert run_cli("config", "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  topic: reviews\n  partitons: 3\nmetrics:\n  port: -1\n")
    result = run_cli("config", "validate", str(bad))
    assert result.returncode == 2
    assert "kafka.partitons: unknown key" in result.stderr
    assert "metrics.port: Input should be greater than or equal to 0" in result.stderr


@pytest.mark.keras
def test_the_keras_backend_names_its_extra_where_tensorflow_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "keras.yaml"
    config.write_text("models:\n  lstm:\n    backend: keras\n")
    result = run_cli("config", "validate", str(config))
    if importlib.util.find_spec("tensorflow") is not None:  # the tensorflow extra's own venv (pytest -m keras)
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2
    assert "models.lstm: Value error, backend keras needs TensorFlow" in result.stderr
    assert "pip install -c constraints.txt 'sentiloop[tensorflow]'" in result.stderr
    from sentiloop.errors import ConfigError
    from sentiloop.models.registry import member_class

    with pytest.raises(ConfigError, match=r"lstm_keras member needs (keras|tensorflow).*sentiloop\[tensorflow\]"):
        member_class("lstm_keras")  # a checkpoint written where the extra was installed


def test_status_without_buffer_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTILOOP_DATA_DIR", str(tmp_path / "none"))
    assert main(["status"]) == 2
    assert "start the daemon (`sentiloop run`) with this data_dir first" in capsys.readouterr().err


def test_a_bug_prints_its_traceback_and_asks_for_a_report(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Only SentiloopError is a user's problem (exit 2, one line); anything else is ours (exit 70, traceback)."""
    import sentiloop.cli as cli

    def broken(_args: object) -> int:
        raise KeyError("a programming error")

    monkeypatch.setattr(cli, "cmd_status", broken)
    assert main(["status"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a programming error'" in err
    assert "internal error (this is a bug). Please report it" in err


def test_dictionary_export_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
    from sentiloop.events import FeedbackEvent
    from sentiloop.models.word_sentiment import WordSentimentModel

    store = SQLiteBufferStore(tmp_path / "buffer.sqlite3", ["very_negative", "negative", "neutral", "positive", "very_positive"],
                              WordSentimentModel([-2, -1, 0, 1, 2]))
    store.append_batch([SourcedEvent(FeedbackEvent(f"e{i}", "lovely day", 4, None, None, None, None, 0), "t", 0, i) for i in range(3)])
    store.close()
    monkeypatch.setenv("SENTILOOP_DATA_DIR", str(tmp_path))
    assert main(["dictionary", "export"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["words"]["lovely"] == {"score": pytest.approx(2.0), "updates": 3}
    assert main(["dictionary", "export", "-o", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["words"].keys() == exported["words"].keys()
    assert main(["dictionary", "show", "lovely"]) == 0
    assert "after 3 labelled update(s)" in capsys.readouterr().out
    assert main(["dictionary", "show", "zebra"]) == 1


def test_replay_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    events = tmp_path / "e.jsonl"
    events.write_text('{"event_id": "a", "text": "x"}\n')
    assert main(["replay", str(events), "--rate", "0"]) == 2
