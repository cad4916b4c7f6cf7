from pathlib import Path

import pytest

from sentiloop.config import Settings, env_overrides, load_settings
from sentiloop.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.kafka.topic == "sentiloop.feedback"
    assert settings.kafka.bootstrap_servers == "embedded"
    assert settings.metrics.host == "127.0.0.1"
    assert settings.label_names == ["very_negative", "negative", "neutral", "positive", "very_positive"]
    assert settings.polarities == [-2, -1, 0, 1, 2]
    assert settings.dictionary.alpha == 0.3


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.topicc: unknown key"):
        load_settings(write(tmp_path, "kafka:\n  topicc: x\n"), environ={})


def test_a_moved_key_is_refused_naming_where_it_lives_now(tmp_path: Path) -> None:
    text = "retrain:\n  bert_epochs: 2\n  patience: 4\n"
    with pytest.raises(ConfigError) as refused:
        load_settings(write(tmp_path, text), environ={})
    assert "retrain.bert_epochs: this key moved to models.bert.fine_tune_epochs" in str(refused.value)
    assert "retrain.patience: this key moved to retrain.convergence.patience" in str(refused.value)
    moved = "models:\n  bert:\n    fine_tune_epochs: 2\nretrain:\n  convergence:\n    patience: 4\n"
    settings = load_settings(write(tmp_path, moved), environ={})
    assert settings.models.bert.fine_tune_epochs == 2 and settings.retrain.convergence.patience == 4


def test_the_example_config_is_valid_and_matches_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yaml"
    assert load_settings(example, environ={}).retrain == Settings().retrain


def test_bad_value_names_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port: Input should be less than or equal to 65535"):
        load_settings(write(tmp_path, "metrics:\n  port: 70000\n"), environ={})
    with pytest.raises(ConfigError, match=r"dictionary\.alpha"):
        load_settings(write(tmp_path, "dictionary:\n  alpha: 1.5\n"), environ={})


def test_labels_must_be_unique_and_at_least_two(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate label names: a"):
        load_settings(write(tmp_path, "labels:\n - {name: a, polarity: -1}\n - {name: a, polarity: 1}\n"), environ={})
    with pytest.raises(ConfigError, match="at least two labels"):
        load_settings(write(tmp_path, "labels:\n - {name: a, polarity: -1}\n"), environ={})


def test_three_class_labels(tmp_path: Path) -> None:
    text = "labels:\n - {name: neg, polarity: -1}\n - {name: neu, polarity: 0}\n - {name: pos, polarity: 1}\n"
    assert load_settings(write(tmp_path, text), environ={}).label_names == ["neg", "neu", "pos"]


def test_env_overrides_nest_and_parse(tmp_path: Path) -> None:
    env = {"SENTILOOP_KAFKA__TOPIC": "reviews", "SENTILOOP_METRICS__PORT": "9200", "SENTILOOP_KAFKA__BOOTSTRAP_SERVERS": "a:1,b:2"}
    settings = load_settings(write(tmp_path, "kafka:\n  topic: other\n"), environ=env)
    assert settings.kafka.topic == "reviews"
    assert settings.metrics.port == 9200
    assert settings.kafka.bootstrap_servers == ["a:1", "b:2"]
    assert env_overrides({"SENTILOOP_CONFIG": "x", "OTHER": "y"}) == {}


def test_env_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.partitions"):
        load_settings(None, environ={"SENTILOOP_KAFKA__PARTITIONS": "zero"})


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "kafka: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_security_settings_pass_through(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings.model_validate(
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "u",
                   "sasl_plain_password": "p", "ssl_cafile": str(ca), "bootstrap_servers": ["k:9093"]}}
    )
    kwargs = settings.kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert kwargs["ssl_cafile"] == str(ca)
    with pytest.raises(ConfigError, match="needs sasl_mechanism"):
        load_settings(write(tmp_path, "kafka:\n  security_protocol: SASL_PLAINTEXT\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(write(tmp_path, "kafka:\n  ssl_cafile: /nonexistent/ca.pem\n"), environ={})


def test_readme_configuration_reference_is_current() -> None:
    """The README's key table is generated from the config models; regenerate it when a key changes:
    replace the section between the markers with the output of `sentiloop config reference`."""
    from pathlib import Path

    from sentiloop.config_reference import END, START, readme_section

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    current = readme[readme.index(START):readme.index(END) + len(END)]
    assert current == readme_section(), "README configuration reference is stale: run `sentiloop config reference`"


def test_language_ko_sets_korean_defaults_and_explicit_keys_win(tmp_path: Path) -> None:
    korean = Settings(language="ko")
    assert korean.dictionary.tokenizer == "kiwi" and korean.models.lstm.tokenizer == korean.models.bilstm.tokenizer == "kiwi"
    assert korean.models.word_sentiment_lexicon == "none" and korean.models.bert.model == "multilingual-e5-small"
    config = tmp_path / "ko.yaml"
    config.write_text("language: ko\nmodels:\n  enabled: [lstm, bert]\n  bilstm: {tokenizer: regex}\n")
    mixed = load_settings(config)
    assert mixed.models.enabled == ["lstm", "bert"] and mixed.models.bilstm.tokenizer == "regex"
    assert mixed.models.lstm.tokenizer == "kiwi" and mixed.dictionary.tokenizer == "kiwi"
    assert Settings().dictionary.tokenizer == "regex" and Settings().models.word_sentiment_lexicon == "vader"
    bad = tmp_path / "fr.yaml"
    bad.write_text("language: fr\n")
    with pytest.raises(ConfigError, match="language"):
        load_settings(bad)


def test_the_cache_dir_variable_is_not_a_setting() -> None:
    assert env_overrides({"SENTILOOP_CACHE_DIR": "/tmp/cache", "SENTILOOP_LANGUAGE": "ko"}) == {"language": "ko"}


def test_a_postgres_buffer_url_is_checked_and_its_password_kept_out_of_files(tmp_path: Path) -> None:
    from sentiloop.config import secret_env, settings_to_yaml, settings_without_secrets

    with pytest.raises(ConfigError, match=r"buffer\.url: .*holds a password: move it to buffer\.password"):
        load_settings(write(tmp_path, "buffer:\n  url: postgresql://u:hunter2@db:5432/x\n"), environ={})
    with pytest.raises(ConfigError, match=r"buffer\.url: .*mysql: only postgresql://"):
        load_settings(write(tmp_path, "buffer:\n  url: mysql://db/x\n"), environ={})
    with pytest.raises(ConfigError, match=r"buffer\.postgres_schema"):
        load_settings(write(tmp_path, "buffer:\n  postgres_schema: Drop Table\n"), environ={})
    settings = load_settings(write(tmp_path, "buffer:\n  url: postgresql://u@db:5432/x\n"),
                             environ={"SENTILOOP_BUFFER__PASSWORD": "hunter2"})
    assert settings.buffer_location == "postgresql://u@db:5432/x (schema sentiloop)"
    assert "hunter2" not in settings_to_yaml(settings) and "password" not in settings_without_secrets(settings)["buffer"]
    assert secret_env(settings)["SENTILOOP_BUFFER__PASSWORD"] == "hunter2"  # how the retrain worker gets it
