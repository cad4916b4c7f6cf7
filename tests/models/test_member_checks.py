"""The check-suite every registered member runs (cf. River's ``check_estimator``).

One tiny, fast instance per implementation in the registry (the LSTM twice: torch and Keras); every
check runs on each. A new member or backend in ``sentiloop.models.registry`` fails
``test_every_registered_implementation_has_a_tiny_factory`` until it gets a factory here, so none
escapes the suite. The Keras one runs where the tensorflow extra is installed (``pytest -m keras``).
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sentiloop.config import BertConfig, LSTMConfig, RecurrentConfig, RetrainConfig
from sentiloop.errors import CheckpointError
from sentiloop.models.base import HasOptimizerState, HasVocabulary, Member, TrainData, WarmStart, WarmStartable
from sentiloop.models.registry import KINDS, MEMBER_NAMES, REGISTRY, MemberSpec
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

POLARITIES_3 = [-1.0, 0.0, 1.0]


TINY_RECURRENT = {"embedding_dim": 16, "hidden_size": 16, "batch_size": 32, "epochs": 3, "patience": 10, "min_freq": 1,
                  "learning_rate": 1e-2, "pretrained_embeddings": False}


def _tiny_recurrent(spec: MemberSpec, num_classes: int, seed: int, _bert: Path) -> Member:
    from sentiloop.models.recurrent import RecurrentMember

    cls = spec.backends["torch"].member_class()
    assert issubclass(cls, RecurrentMember)
    return cls(num_classes, RecurrentConfig(**TINY_RECURRENT), seed=seed)


def _tiny_keras(_spec: MemberSpec, num_classes: int, seed: int, _bert: Path) -> Member:
    from sentiloop.models.keras_lstm import KerasLSTMMember

    return KerasLSTMMember(num_classes, LSTMConfig(**TINY_RECURRENT), seed=seed)


def _tiny_word(_spec: MemberSpec, num_classes: int, _seed: int, _bert: Path) -> Member:
    from sentiloop.models.word_member import WordSentimentMember

    return WordSentimentMember(list(np.linspace(-1, 1, num_classes)), min_count=1, seed_lexicon="none")


def _tiny_bert(_spec: MemberSpec, num_classes: int, seed: int, bert: Path) -> Member:
    from sentiloop.models.bert import BertMember

    config = BertConfig(model=str(bert), batch_size=8, max_length=16, learning_rate=1e-3, epochs=2, fine_tune_epochs=1, fine_tune_max_steps=4)
    return BertMember(num_classes, config, seed=seed)


FACTORIES: dict[str, Callable[[MemberSpec, int, int, Path], Member]] = {  # by kind
    "word_sentiment": _tiny_word, "lstm": _tiny_recurrent, "lstm_keras": _tiny_keras, "bilstm": _tiny_recurrent, "bert": _tiny_bert,
}
SPEC_OF_KIND = {impl.kind: spec for spec in REGISTRY for impl in spec.backends.values()}
NEEDS_TENSORFLOW = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="the tensorflow extra is not installed")
IMPLEMENTATIONS = [pytest.param(kind, id=kind, marks=[pytest.mark.keras, NEEDS_TENSORFLOW] if KINDS[kind].extra == "tensorflow" else [])
                   for kind in sorted(KINDS)]


def data(n: int, seed: int = 0) -> TrainData:
    """Three classes whose words carry the label (0 negative, 1 neutral, 2 positive)."""
    rng = random.Random(seed)
    labels = [rng.randrange(3) for _ in range(n)]
    words = (NEGATIVE, NEUTRAL, POSITIVE)
    texts = [" ".join(rng.sample(words[y], 3) + rng.sample(NEUTRAL, 1)) for y in labels]
    return TrainData(texts, np.array(labels, dtype=np.int64))


TRAIN, VALIDATION, PROBE = data(240), data(60, seed=1), data(30, seed=2)


@pytest.fixture(params=IMPLEMENTATIONS)
def build(request: pytest.FixtureRequest, tiny_bert: Path) -> Callable[..., Member]:
    kind = request.param

    def make(num_classes: int = 3, seed: int = 7) -> Member:
        return FACTORIES[kind](SPEC_OF_KIND[kind], num_classes, seed, tiny_bert)

    return make


@pytest.fixture
def trained(build: Callable[..., Member]) -> Member:
    member = build()
    member.fit(TRAIN, VALIDATION)
    return member


def test_every_registered_implementation_has_a_tiny_factory() -> None:
    assert set(FACTORIES) == set(KINDS)
    assert {spec.name for spec in SPEC_OF_KIND.values()} == set(MEMBER_NAMES)


def test_the_registry_names_real_config_sections_the_seed_weights_and_the_seed_order() -> None:
    from sentiloop.config import Settings

    settings = Settings()
    for spec in REGISTRY:
        section: object = settings
        for part in spec.config_section.split("."):
            section = getattr(section, part)  # the path the registry names is a real config section
        assert section is not None
    assert sum(spec.default_weight for spec in REGISTRY) == pytest.approx(1.0)
    assert [spec.name for spec in sorted(REGISTRY, key=lambda s: s.training_order)] == ["word_sentiment", "lstm", "bilstm", "bert"]


def test_is_a_member_of_its_registered_kind(trained: Member) -> None:
    assert isinstance(trained, Member)
    assert KINDS[trained.kind].member_class() is type(trained)


def test_predicts_three_classes_as_probabilities(trained: Member) -> None:
    probabilities = trained.predict_proba(PROBE.texts)
    assert probabilities.shape == (len(PROBE), 3)
    assert np.all(probabilities >= 0) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert trained.predict_proba([]).shape[0] == 0


def test_save_load_round_trip_gives_the_same_predictions(trained: Member, tmp_path: Path) -> None:
    trained.save(tmp_path / "m")
    loaded = type(trained).load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(PROBE.texts), trained.predict_proba(PROBE.texts), atol=1e-6)


def test_a_tampered_checkpoint_is_refused(trained: Member, tmp_path: Path) -> None:
    trained.save(tmp_path / "m")
    victim = max((p for p in (tmp_path / "m").rglob("*") if p.is_file() and p.name != "manifest.json"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        type(trained).load(tmp_path / "m")


def test_the_same_seed_gives_the_same_model(build: Callable[..., Member]) -> None:
    first, second = build(seed=3), build(seed=3)
    first.fit(TRAIN, VALIDATION)
    second.fit(TRAIN, VALIDATION)
    np.testing.assert_allclose(first.predict_proba(PROBE.texts), second.predict_proba(PROBE.texts), atol=1e-6)


def test_a_warm_start_returns_a_new_member_and_leaves_the_champion_untouched(trained: Member, tmp_path: Path) -> None:
    if not isinstance(trained, WarmStartable):
        pytest.skip(f"{trained.kind} retrains only from scratch")
    before = trained.predict_proba(PROBE.texts)
    budget = WarmStart(RetrainConfig(warm_start_epochs=1), iteration=1, backup_dir=tmp_path)
    challenger, report = trained.warm_start(data(120, seed=5), VALIDATION, budget)
    assert challenger is not trained and type(challenger) is type(trained)
    assert report.steps > 0
    np.testing.assert_array_equal(trained.predict_proba(PROBE.texts), before)
    assert challenger.predict_proba(PROBE.texts).shape == before.shape


def test_validation_scores_a_fit_reports_are_its_own_predictions(build: Callable[..., Member], tmp_path: Path) -> None:
    """The retrain cycle uses a report's validation probabilities instead of scoring the split again;
    members trained by gradient steps score it for early stopping, so they must report it."""
    member = build()
    runs = [(member, member.fit(TRAIN, VALIDATION))]
    if isinstance(member, WarmStartable):
        runs.append(member.warm_start(data(120, seed=5), VALIDATION, WarmStart(RetrainConfig(warm_start_epochs=2), 1, tmp_path)))
    for trained, report in runs:
        if isinstance(trained, HasOptimizerState):
            assert report.validation_probabilities is not None
        if report.validation_probabilities is not None:
            np.testing.assert_allclose(report.validation_probabilities, trained.predict_proba(VALIDATION.texts), atol=1e-5)


def test_capabilities_hold_what_they_promise(trained: Member) -> None:
    if isinstance(trained, HasVocabulary):
        words = set(trained.known_words())
        assert words and set(trained.tokenize(PROBE.texts[0])) & words
    if isinstance(trained, HasOptimizerState):
        state = trained.optimizer_state()
        assert state is not None and state.tensors
