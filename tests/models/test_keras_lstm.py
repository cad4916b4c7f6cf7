"""The Keras LSTM member: the seed's recipe, transfer, a team's own .keras file brought in, refusals, voting.

Needs the tensorflow extra: CI runs these in a venv of their own (``pytest -m keras``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras

from sentiloop.config import KerasImportConfig, LSTMConfig, RetrainConfig, Settings
from sentiloop.errors import CheckpointError, ConfigError
from sentiloop.models.base import TrainData, WarmStart
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.keras_lstm import KerasLSTMMember
from sentiloop.models.registry import spec_for
from sentiloop.models.vocab import PAD, UNK, Vocabulary
from sentiloop.models.word_member import WordSentimentMember
from tests.models.test_member_checks import PROBE, TINY_RECURRENT, TRAIN, VALIDATION, data

pytestmark = pytest.mark.keras
LABELS = ["negative", "neutral", "positive"]
TEAM_LENGTH = 16  # the maxlen of the team's pad_sequences, given to sentiloop as models.lstm.max_length


def tiny(**overrides: Any) -> KerasLSTMMember:
    return KerasLSTMMember(3, LSTMConfig(**{**TINY_RECURRENT, "max_length": TEAM_LENGTH, **overrides}), seed=7)


@pytest.fixture(scope="module")
def champion() -> KerasLSTMMember:
    member = tiny()
    member.fit(TRAIN, VALIDATION)
    return member


def accuracy(member: KerasLSTMMember, split: TrainData) -> float:
    return float((member.predict_proba(split.texts).argmax(1) == split.labels).mean())


# -- the seed's recipe ------------------------------------------------------------------------------
def test_the_network_follows_the_seed(champion: KerasLSTMMember) -> None:
    assert champion.model is not None
    lstm = champion.model.get_layer("lstm_0").get_config()
    assert lstm["kernel_initializer"]["class_name"] == "HeNormal" and lstm["unit_forget_bias"]
    assert champion.model.get_layer("dropout").get_config()["rate"] == LSTMConfig().dropout == 0.3
    state = champion.optimizer_state()
    assert state is not None
    schedule = state.meta["config"]["config"]["learning_rate"]
    assert schedule["class_name"] == "ExponentialDecay"
    assert (schedule["config"]["decay_steps"], schedule["config"]["decay_rate"]) == (100, 0.96)
    assert LSTMConfig().learning_rate == 1e-2
    assert accuracy(champion, PROBE) > 0.9


def test_padding_never_changes_an_answer(champion: KerasLSTMMember) -> None:
    """Max pooling relies on Keras repeating the last real output over the padding: a short text's
    answer is the same alone and beside a much longer one."""
    short, long = "awful bad film", " ".join(["great wonderful"] * 20)
    alone = champion.predict_proba([short])
    together = champion.predict_proba([short, long])
    np.testing.assert_allclose(together[:1], alone, atol=1e-6)


# -- transfer ---------------------------------------------------------------------------------------
def test_transfer_keeps_the_lstm_and_the_words_and_starts_a_new_classifier(champion: KerasLSTMMember) -> None:
    assert champion.model is not None and champion.vocab is not None
    before = champion.predict_proba(PROBE.texts)
    texts = [f"{text} brandnew" for text in data(60, seed=4).texts]
    challenger = tiny()
    carried = challenger.transfer_from(champion, texts)
    assert challenger.model is not None and challenger.vocab is not None
    assert "brandnew" in challenger.vocab and set(champion.vocab.words()) <= set(challenger.vocab.words())
    assert carried == len(champion.vocab.words()) + 1  # and the unknown-word vector
    for old, new in zip(champion.model.get_layer("lstm_0").get_weights(), challenger.model.get_layer("lstm_0").get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    old_vectors = champion.model.get_layer("embedding").get_weights()[0]
    new_vectors = challenger.model.get_layer("embedding").get_weights()[0]
    word = champion.vocab.words()[0]
    np.testing.assert_array_equal(new_vectors[challenger.vocab.stoi[word]], old_vectors[champion.vocab.stoi[word]])
    assert not np.allclose(challenger.model.get_layer("classifier").get_weights()[0], champion.model.get_layer("classifier").get_weights()[0])
    np.testing.assert_array_equal(champion.predict_proba(PROBE.texts), before)  # the champion keeps serving as it was


def test_a_warm_start_distils_the_champion_on_replayed_rows(champion: KerasLSTMMember, tmp_path: Path) -> None:
    new = data(90, seed=8)
    replay = np.zeros(len(new), dtype=bool)
    replay[:45] = True
    train = TrainData(new.texts, new.labels, replay=replay)
    challenger, report = champion.warm_start(train, VALIDATION, WarmStart(RetrainConfig(warm_start_epochs=2), 1, tmp_path))
    assert report.steps > 0 and report.validation_probabilities is not None
    assert accuracy(challenger, PROBE) > 0.8


# -- checkpoints and optimizer state ----------------------------------------------------------------
def test_optimizer_state_round_trips_and_goes_into_the_unified_checkpoint(champion: KerasLSTMMember, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from sentiloop.retrainers.checkpoints import CheckpointManager

    state = champion.optimizer_state()
    assert state is not None and "adam/iteration" in state.tensors
    manager = CheckpointManager.start(tmp_path, "manual", "test")
    ensemble = Ensemble({"lstm": champion}, {"lstm": 1.0}, LABELS)
    target = manager.save_iteration(1, ensemble, [{"metrics": {}}], {"lstm": state})
    stored = load_file(str(target / "optimizers" / "lstm.safetensors"))
    assert stored.keys() == state.tensors.keys()
    _, loaded, _ = manager.load_iteration()
    member = loaded.members["lstm"]
    assert isinstance(member, KerasLSTMMember) and member.optimizer_state() is None
    member.load_optimizer_state(stored, json.loads((target / "optimizers" / "lstm.json").read_text()))
    again = member.optimizer_state()
    assert again is not None and all(np.array_equal(again.tensors[k], state.tensors[k]) for k in state.tensors)


def test_a_checkpoint_whose_weights_do_not_fit_is_refused(champion: KerasLSTMMember, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from sentiloop.models.checkpoint import write_manifest

    champion.save(tmp_path / "m")
    save_file({"0000:embedding/embeddings": np.zeros((3, 3), np.float32)}, str(tmp_path / "m" / "model.safetensors"))
    (tmp_path / "m" / "manifest.json").unlink()
    write_manifest(tmp_path / "m", "lstm_keras")  # a consistent manifest over the wrong weights
    with pytest.raises(CheckpointError, match="does not fit"):
        KerasLSTMMember.load(tmp_path / "m")


# -- a team's own .keras file -----------------------------------------------------------------------
def team_vocabulary(path: Path, texts: list[str], oov: str | None = "<OOV>") -> Path:
    """A Keras ``Tokenizer.to_json()`` file, as Keras 2 writes it (word_index is a JSON string)."""
    words = list(dict.fromkeys(w for text in texts for w in Vocabulary([]).tokenize(text)))
    index = {word: i for i, word in enumerate(([oov] if oov else []) + words, start=1)}
    path.write_text(json.dumps({"class_name": "Tokenizer", "config": {"oov_token": oov, "word_index": json.dumps(index)}}))
    return path


def team_ids(vocabulary: Path, texts: list[str], length: int) -> np.ndarray:
    """What the team's own pipeline fed the model: Tokenizer ids, pre-padded (Keras' pad_sequences default)."""
    index = json.loads(json.loads(vocabulary.read_text())["config"]["word_index"])
    out = np.zeros((len(texts), length), dtype=np.int32)
    for row, text in enumerate(texts):
        ids = [index.get(w, 1) for w in Vocabulary([]).tokenize(text)][:length]
        out[row, length - len(ids):] = ids
    return out


def team_model(path: Path, vocab_size: int, classes: int = 3, activation: str = "softmax", extra: list[Any] | None = None) -> Path:
    """A Sequential LSTM the way a Keras team writes one: last hidden state, no masking, pre-padding."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(vocab_size, 12),
                              keras.layers.LSTM(12), *(extra or []), keras.layers.Dense(classes, activation=activation)])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> KerasImportConfig:
    """A team's trained model and vocabulary, as files."""
    root = tmp_path_factory.mktemp("team")
    vocabulary = team_vocabulary(root / "tokenizer.json", list(TRAIN.texts))
    size = len(json.loads(json.loads(vocabulary.read_text())["config"]["word_index"])) + 1
    path = team_model(root / "team.keras", size)
    model = keras.saving.load_model(path)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(team_ids(vocabulary, list(TRAIN.texts), TEAM_LENGTH), TRAIN.labels, epochs=4, batch_size=32, verbose=0)
    model.save(path)
    return KerasImportConfig(model=path, vocabulary=vocabulary)


def test_a_team_model_answers_as_it_did_in_the_team_pipeline(team: KerasImportConfig) -> None:
    assert team.model is not None and team.vocabulary is not None
    member = tiny()
    member.bring_in(team)
    assert member.vocab is not None and member.vocab.itos[UNK] == "<unk>" and member.vocab.itos[PAD] == "<pad>"
    theirs = keras.saving.load_model(team.model).predict(team_ids(team.vocabulary, list(PROBE.texts), TEAM_LENGTH), verbose=0)
    np.testing.assert_allclose(member.predict_proba(PROBE.texts), theirs, atol=1e-5)
    assert accuracy(member, PROBE) > 0.8


def test_a_team_model_is_fine_tuned_checkpointed_and_retrained_in_its_own_shape(team: KerasImportConfig, tmp_path: Path) -> None:
    member = tiny(epochs=2)
    member.bring_in(team)
    imported = member.predict_proba(VALIDATION.texts)
    report = member.fit(TRAIN, VALIDATION)
    baseline = float(-np.log(imported[np.arange(len(VALIDATION)), VALIDATION.labels]).mean())
    assert report.best_val_loss is not None and report.best_val_loss <= baseline + 1e-6  # never worse than it came
    member.save(tmp_path / "m")
    loaded = KerasLSTMMember.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(PROBE.texts), member.predict_proba(PROBE.texts), atol=1e-6)
    challenger, report = loaded.warm_start(data(120, seed=5), VALIDATION, WarmStart(RetrainConfig(warm_start_epochs=1), 1, tmp_path))
    assert challenger.model is not None and loaded.model is not None
    assert [type(layer).__name__ for layer in challenger.model.layers] == [type(layer).__name__ for layer in loaded.model.layers]
    assert challenger.padding == "pre" and report.steps > 0


def test_bringing_in_from_settings_builds_the_configured_member(team: KerasImportConfig, tmp_path: Path) -> None:
    labels = [{"name": name, "polarity": polarity} for name, polarity in zip(LABELS, (-1, 0, 1), strict=True)]
    settings = Settings.model_validate({"data_dir": str(tmp_path), "labels": labels,
                                        "models": {"lstm": {"backend": "keras", "max_length": TEAM_LENGTH, "keras": team.model_dump(mode="json")}}})
    member = spec_for("lstm").build(settings, settings.models)
    assert isinstance(member, KerasLSTMMember) and member.brought_in == str(team.model)


def test_a_keras_lstm_votes_in_an_ensemble_and_reloads_by_its_kind(champion: KerasLSTMMember, tmp_path: Path) -> None:
    word = WordSentimentMember([-1.0, 0.0, 1.0], min_count=1, seed_lexicon="none")
    word.fit(TRAIN, VALIDATION)
    ensemble = Ensemble({"lstm": champion, "word_sentiment": word}, {"lstm": 0.6, "word_sentiment": 0.4}, LABELS)
    ensemble.save(tmp_path / "e")
    assert json.loads((tmp_path / "e" / "ensemble.json").read_text())["members"]["lstm"] == "lstm_keras"
    loaded = Ensemble.load(tmp_path / "e")
    assert isinstance(loaded.members["lstm"], KerasLSTMMember)
    expected = 0.6 * champion.predict_proba(PROBE.texts) + 0.4 * word.predict_proba(PROBE.texts)
    np.testing.assert_allclose(loaded.predict_proba(PROBE.texts), expected, atol=1e-6)


# -- refusals ---------------------------------------------------------------------------------------
@pytest.fixture
def vocabulary(tmp_path: Path) -> Path:
    return team_vocabulary(tmp_path / "tokenizer.json", list(TRAIN.texts[:50]))


def bring(model: Path, vocabulary: Path, **fields: Any) -> None:
    tiny().bring_in(KerasImportConfig(model=model, vocabulary=vocabulary, **fields))


def test_a_model_for_another_label_set_is_refused(tmp_path: Path, vocabulary: Path) -> None:
    with pytest.raises(ConfigError, match="2 classes but sentiloop.labels has 3"):
        bring(team_model(tmp_path / "m.keras", 200, classes=2), vocabulary)


def test_a_model_that_answers_logits_is_refused(tmp_path: Path, vocabulary: Path) -> None:
    with pytest.raises(ConfigError, match="not probabilities.*softmax"):
        bring(team_model(tmp_path / "m.keras", 200, activation="linear"), vocabulary)


def test_a_model_without_an_embedding_is_refused(tmp_path: Path, vocabulary: Path) -> None:
    model = keras.Sequential([keras.Input(shape=(None, 4)), keras.layers.LSTM(4), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "m.keras")
    with pytest.raises(ConfigError, match=r"\(batch, time\)"):
        bring(tmp_path / "m.keras", vocabulary)


def test_a_lambda_layer_is_never_deserialised(tmp_path: Path, vocabulary: Path) -> None:
    path = team_model(tmp_path / "m.keras", 200, extra=[keras.layers.Lambda(lambda t: t * 2)])
    with pytest.raises(ConfigError, match="Lambda layer"):
        bring(path, vocabulary)


class Doubling(keras.layers.Layer):
    """A team's own layer: what a Lambda should become."""

    def call(self, inputs: Any) -> Any:
        return inputs * 2


def test_a_custom_layer_loads_only_when_named(tmp_path: Path, vocabulary: Path) -> None:
    path = team_model(tmp_path / "m.keras", 200, extra=[Doubling()])
    with pytest.raises(ConfigError, match="cannot be loaded"):
        bring(path, vocabulary)
    bring(path, vocabulary, custom_objects=[f"{__name__}:Doubling"])


def test_a_tokenizer_without_an_oov_token_is_refused(tmp_path: Path) -> None:
    vocabulary = team_vocabulary(tmp_path / "tokenizer.json", list(TRAIN.texts[:50]), oov=None)
    with pytest.raises(ConfigError, match="oov_token"):
        bring(team_model(tmp_path / "m.keras", 200), vocabulary)


# -- the whole way, as a team runs it -----------------------------------------------------------------
def test_sentiloop_train_brings_in_a_team_model_and_serves_it_in_the_vote(tmp_path: Path) -> None:
    """`sentiloop train` with models.lstm.backend keras and the team's files: the v0001 champion's LSTM is
    their model (fine-tuned), voting beside the dictionary, and `sentiloop predict` answers with it."""
    import subprocess
    import sys

    import yaml

    from tests.retrainers.test_retrain_cycle import OLD, sentences

    texts, labels = sentences(OLD, 300, 1)
    names = Settings().label_names
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps({"text": t, "label": names[y]}) + "\n" for t, y in zip(texts, labels)))
    vocabulary = team_vocabulary(tmp_path / "tokenizer.json", texts)
    model = team_model(tmp_path / "team.keras", len(json.loads(json.loads(vocabulary.read_text())["config"]["word_index"])) + 1, classes=5)
    config = {"data_dir": str(tmp_path / "data"), "mlflow": {"enabled": False},
              "models": {"enabled": ["lstm", "word_sentiment"], "word_sentiment_lexicon": "none",
                         "lstm": {**TINY_RECURRENT, "max_length": TEAM_LENGTH, "backend": "keras",
                                  "keras": {"model": str(model), "vocabulary": str(vocabulary)}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sentiloop", *args, "--config", str(tmp_path / "config.yaml")],
                              capture_output=True, text=True, timeout=600)

    trained = cli("train", "--profile", "fast", "--data", str(tmp_path / "labelled.jsonl"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = tmp_path / "data" / "models" / "v0001"
    assert json.loads((version / "ensemble.json").read_text())["members"] == {"lstm": "lstm_keras", "word_sentiment": "word_sentiment"}
    assert json.loads((version / "members" / "lstm" / "member.json").read_text())["brought_in"] == str(model)
    predicted = cli("predict", "--json", "superb wonderful product")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert set(json.loads(predicted.stdout)[0]) >= {"lstm", "ensemble"}


@pytest.mark.parametrize("content", [b"not a zip at all", "truncated"])
def test_a_damaged_keras_file_is_refused_with_a_clear_error(tmp_path: Path, vocabulary: Path, content: bytes | str) -> None:
    import zipfile

    path = tmp_path / "m.keras"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as archive:  # a copy cut short: its config ends mid-object
            archive.writestr("config.json", '{"class_name": "Sequential", "config": {')
    with pytest.raises(ConfigError, match="cannot be loaded as a Keras model"):
        bring(path, vocabulary)


def test_an_optimizer_state_of_another_network_is_refused(champion: KerasLSTMMember) -> None:
    state = champion.optimizer_state()
    assert state is not None
    other = tiny(hidden_size=8)
    other.fit(TRAIN, VALIDATION)
    with pytest.raises(CheckpointError, match="does not fit"):
        other.load_optimizer_state(state.tensors, state.meta)
