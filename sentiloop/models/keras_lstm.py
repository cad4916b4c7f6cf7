"""The LSTM member in TensorFlow/Keras 3 (``models.lstm.backend: keras``), interchangeable with the torch one.

For teams whose LSTM is a tf.keras model, as the seed's is: he_normal kernels, Adam on
``ExponentialDecay(1e-2, 100, 0.96)``, Dropout 0.3, ``model.get_weights()`` in the unified checkpoint.
The network is the torch member's (embedding with id 0 as padding → LSTM → max+mean pooling → dropout
→ softmax classifier), its vocabulary, word vectors, loss (per-example weights, the champion distilled
on replayed rows), gradient clipping, early stopping and seed discipline too, so the two are compared
on equal terms (README). A team's own ``.keras`` file can be brought in (:meth:`KerasLSTMMember.bring_in`):
loaded with ``safe_mode=True`` (a Lambda layer, Python bytecode, is refused; custom layer classes only
when named), its input and output shapes checked against the vocabulary and the label set. Its
retrain is the seed's *transfer*: the champion's LSTM and word vectors, the champion's and the new
data's words merged, a fresh he_normal classifier. Whatever the architecture, it is rebuilt from its
own Keras config, so an imported model keeps its shape through every retrain.

Checkpoints: ``architecture.json`` (the Keras config, deserialised in safe mode), ``model.safetensors``
(``get_weights()`` in order), ``vocab.json`` and ``member.json`` under the sha256 manifest; no pickle,
no HDF5. TensorFlow is imported by this module only, and only the keras backend imports it.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from sentiloop.config import KerasImportConfig, LSTMConfig, ModelsConfig, Settings
from sentiloop.errors import CheckpointError, ConfigError, DataError
from sentiloop.files import read_json
from sentiloop.models.base import FitReport, TrainData, WarmStart
from sentiloop.models.checkpoint import verify_member_dir, write_json, write_member_dir
from sentiloop.models.fitting import OptimizerState, Patience, length_sorted_batches, minibatches, replay_answers
from sentiloop.models.keras_vocabulary import read_vocabulary
from sentiloop.models.vocab import Vocabulary, VocabularyMember, pad
from sentiloop.models.word_vectors import pretrained_vectors

# Keras says, each time it traces the network, that max pooling drops the mask: it need not keep it (build_network).
warnings.filterwarnings("ignore", message="Layer 'max_pool' .* does not support masking", category=UserWarning)

if keras.backend.backend() != "tensorflow":
    raise ConfigError(f"KERAS_BACKEND is {keras.backend.backend()!r}: the keras LSTM member trains with TensorFlow; unset it")

log = logging.getLogger(__name__)

ARCHITECTURE, WEIGHTS, VOCAB, MEMBER = "architecture.json", "model.safetensors", "vocab.json", "member.json"
FORMAT = "sentiloop.keras-lstm/1"
PREDICT_BATCH = 256
Padding = Literal["pre", "post"]


class _Teacher(NamedTuple):
    """The champion's probabilities on the replayed rows (zeros elsewhere), the mask of those rows, and how to distil."""

    probabilities: np.ndarray
    mask: np.ndarray
    weight: float
    temperature: float


class _Encoded(NamedTuple):
    """A split as token ids, labels and per-example weights (ones when the split has none)."""

    ids: list[list[int]]
    labels: np.ndarray
    weights: np.ndarray


def build_network(vocab_size: int, config: LSTMConfig, num_classes: int, seed: int) -> keras.Model:
    """The seed's LSTM: he_normal kernels, orthogonal recurrent weights, forget bias 1, Dropout, softmax.

    Max pooling needs no mask: Keras repeats an LSTM's last real output over the padding after it,
    which cannot change a maximum (the ids are padded after the text); mean pooling honours the mask.
    Every initializer and the dropout have their own seed, so runs repeat without touching global RNGs.
    """
    layers = keras.layers
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    states = layers.Embedding(vocab_size, config.embedding_dim, mask_zero=True, name="embedding",
                              embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))(ids)
    for layer in range(config.num_layers):
        if layer:
            states = layers.Dropout(config.dropout, seed=seed + 100 + layer, name=f"lstm_dropout_{layer}")(states)
        states = layers.LSTM(config.hidden_size, return_sequences=True, unit_forget_bias=True, name=f"lstm_{layer}",
                             kernel_initializer=keras.initializers.HeNormal(seed=seed + 1 + layer),
                             recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 50 + layer))(states)
    pooled = layers.Concatenate(name="pooled")([layers.GlobalMaxPooling1D(name="max_pool")(states),
                                                layers.GlobalAveragePooling1D(name="mean_pool")(states)])
    dropped = layers.Dropout(config.dropout, seed=seed + 200, name="dropout")(pooled)
    probabilities = layers.Dense(num_classes, activation="softmax", name="classifier",
                                 kernel_initializer=keras.initializers.HeNormal(seed=seed + 300))(dropped)
    return keras.Model(ids, probabilities, name="sentiloop_lstm")


class KerasLSTMMember(VocabularyMember):
    """The ensemble's LSTM, in Keras: trains, predicts, checkpoints and retrains (transfer) like the torch one."""

    kind: ClassVar[str] = "lstm_keras"
    config: LSTMConfig

    def __init__(self, num_classes: int, config: LSTMConfig | None = None, seed: int = 13) -> None:
        if num_classes < 2:
            raise ValueError("needs at least two classes")
        self.num_classes = num_classes
        self.config = config or LSTMConfig()
        self.seed = seed
        self.vocab: Vocabulary | None = None
        self.model: keras.Model | None = None
        self.padding: Padding = "post"
        self.fixed_width: int | None = None  # a brought-in model reads exactly this many ids (its pad_sequences maxlen)
        self.custom_objects: list[str] = []
        self.brought_in: str | None = None  # the .keras file the weights came from, when they did
        self._optimizer: keras.optimizers.Optimizer | None = None

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelsConfig) -> KerasLSTMMember:
        member = cls(len(settings.labels), models.lstm, seed=models.seed)
        if models.lstm.keras.model is not None:
            member.bring_in(models.lstm.keras)
        return member

    # -- bringing in a team's .keras file ----------------------------------------------------
    def bring_in(self, source: KerasImportConfig) -> None:
        """Load ``source.model`` (safe mode) and its vocabulary; refuse a file that cannot fit.

        The model must read one (batch, time) tensor of token ids and give one softmax probability per
        label; its one Embedding layer must cover the vocabulary's ids (extra words beyond its input_dim
        are unknown to it, as with Keras' ``Tokenizer(num_words=...)``). It is fed exactly as its team's
        pipeline fed it: ids padded (``source.padding``) to its fixed input length, or to
        ``models.lstm.max_length`` (the ``maxlen`` of their ``pad_sequences``). ``fit`` then fine-tunes it.
        """
        if source.model is None or source.vocabulary is None:
            raise ConfigError("models.lstm.keras: give both model and vocabulary")
        path = source.model
        objects = _custom_objects(source.custom_objects)
        try:
            model = keras.saving.load_model(path, custom_objects=objects, compile=False, safe_mode=True)
        except ValueError as exc:
            if "safe_mode" in str(exc):
                raise ConfigError(f"{path} holds a Lambda layer (Python bytecode, which sentiloop never runs): move its function "
                                  "into a layer class registered with keras.saving.register_keras_serializable and name it in "
                                  "models.lstm.keras.custom_objects") from None
            raise ConfigError(f"{path} cannot be loaded as a Keras model: {exc}") from None
        except (OSError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path} cannot be loaded as a Keras model: {exc}") from None
        vocab = read_vocabulary(source.vocabulary, self.config.tokenizer)
        self.fixed_width = _check_shapes(model, self.num_classes, path) or self.config.max_length
        input_dim = int(_embedding_layer(model, path).input_dim)
        if len(vocab) > input_dim:
            log.info("%s reads %d ids; the %d words of %s beyond them count as unknown", path, input_dim, len(vocab) - input_dim, source.vocabulary)
            vocab = Vocabulary(vocab.itos[2:input_dim], vocab.tokenizer_name)
        self.vocab, self.model, self.padding = vocab, model, source.padding
        self.custom_objects, self.brought_in, self._optimizer = list(source.custom_objects), str(path), None
        probe = self.predict_proba(["a", "good film", "a long and rather dull evening"])
        if not (np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3)):
            raise ConfigError(f"{path}: its outputs are not probabilities (rows sum to {probe.sum(axis=1).round(3).tolist()}); "
                              f"end the model with Dense({self.num_classes}, activation='softmax')")

    # -- training ----------------------------------------------------------------------------
    def fit(self, train: TrainData, validation: TrainData | None = None) -> FitReport:
        """Train from scratch (new vocabulary, new network), or fine-tune a brought-in model.

        A brought-in model is scored on ``validation`` before its first step: training keeps it
        unchanged unless an epoch beats it there.
        """
        if self.brought_in is not None and self.model is not None:
            return self._train(train, validation, baseline=True)
        cfg = self.config
        self.vocab = Vocabulary.build(train.texts, cfg.tokenizer, cfg.min_freq, cfg.max_vocab)
        self.model = build_network(len(self.vocab), cfg, self.num_classes, self.seed)
        if cfg.pretrained_embeddings:
            embedding = _embedding_layer(self.model, "the network")
            matrix = embedding.get_weights()[0]
            vectors, found = pretrained_vectors(self.vocab.itos[2:], cfg.embedding_dim)
            matrix[2:][found] = vectors[found]
            embedding.set_weights([matrix])
        self.padding, self.fixed_width = "post", None
        return self._train(train, validation)

    def warm_start(self, train: TrainData, validation: TrainData, budget: WarmStart) -> tuple[KerasLSTMMember, FitReport]:
        """The seed's LSTM "transfer": a new member with this champion's network, word vectors and a fresh classifier."""
        distillation = budget.retrain.distillation
        answers = replay_answers(self, train, distillation)
        teacher = None if answers is None else _Teacher(*answers, distillation.weight, distillation.temperature)
        challenger = KerasLSTMMember(self.num_classes, self.config, self.seed)
        challenger.transfer_from(self, train.texts)
        return challenger, challenger._train(train, validation, budget.retrain.warm_start_epochs, teacher)

    def transfer_from(self, champion: KerasLSTMMember, texts: Sequence[str]) -> int:
        """Build this member from ``champion``; returns how many word vectors were carried over.

        The network is rebuilt from the champion's own Keras config with the embedding widened to the
        merged vocabulary (the words of ``texts``, then every word the champion knew, capped at
        ``max_vocab``); every layer keeps the champion's weights but the classifier, which starts
        again from he_normal. New words start from the pretrained vectors, at the champion's scale.
        """
        source, old = champion._require_model(), champion._require_vocab()
        cfg = self.config
        vocab = Vocabulary.build(texts, old.tokenizer_name, cfg.min_freq, cfg.max_vocab).merged(old, cfg.max_vocab)
        architecture = keras.saving.serialize_keras_object(source)
        _set_embedding_width(architecture, len(vocab))
        model = _deserialize(architecture, champion.custom_objects)
        embedding = _embedding_layer(model, "the champion")
        classifier = _classifier(model)
        for layer in model.layers:
            if layer is embedding or layer is classifier or not layer.weights:
                continue
            layer.set_weights(source.get_layer(layer.name).get_weights())
        old_matrix = _embedding_layer(source, "the champion").get_weights()[0]
        matrix = embedding.get_weights()[0]
        if cfg.pretrained_embeddings:
            vectors, found = pretrained_vectors(vocab.itos[2:], matrix.shape[1])
            matrix[2:][found] = vectors[found] * float(old_matrix[2:].std() or 1.0)
        new_ids, old_ids = vocab.shared_ids(old)
        matrix[new_ids] = old_matrix[old_ids]
        embedding.set_weights([matrix])
        kernel, *rest = classifier.get_weights()
        fresh = keras.initializers.HeNormal(seed=self.seed + 300)(kernel.shape)
        classifier.set_weights([np.asarray(fresh), *(np.zeros_like(w) for w in rest)])
        self.vocab, self.model = vocab, model
        self.padding, self.fixed_width = champion.padding, champion.fixed_width
        self.custom_objects = list(champion.custom_objects)
        self.brought_in, self._optimizer = None, None
        return len(new_ids)

    def _train(self, train: TrainData, validation: TrainData | None, epochs: int | None = None,
               teacher: _Teacher | None = None, baseline: bool = False) -> FitReport:
        """The loop of every training mode: shuffled mini-batches, Adam on the seed's schedule, early stopping.

        ``epochs`` caps ``config.epochs``; ``teacher`` (the champion's probabilities on replayed rows, and
        their mask) adds ``weight · T² · KL`` on those rows; ``baseline`` scores the starting weights first.
        """
        model, cfg = self._require_model(), self.config
        if not len(train):
            raise DataError("no training examples")
        data = self._encode(train)
        held_out = self._encode(validation) if validation is not None and len(validation) else None
        schedule = keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, cfg.lr_decay_steps, cfg.lr_decay_rate)
        optimizer = keras.optimizers.Adam(learning_rate=schedule, epsilon=1e-8, global_clipnorm=cfg.grad_clip)
        step = self._step_function(optimizer, teacher)
        if teacher is not None:
            targets, mask = teacher.probabilities, teacher.mask
        else:
            targets, mask = np.zeros((len(train), self.num_classes), np.float32), np.zeros(len(train), bool)
        patience, report = Patience(cfg.patience), FitReport()
        best: tuple[list[np.ndarray], np.ndarray] | None = None
        if baseline and held_out is not None:
            probabilities = self._probabilities(held_out.ids)
            patience.improved(_loss(probabilities, held_out))
            best = model.get_weights(), probabilities
        rng = np.random.default_rng(self.seed)
        steps_per_epoch = math.ceil(len(data.ids) / cfg.batch_size)
        epochs = cfg.epochs if epochs is None else max(1, min(epochs, cfg.epochs))
        with tqdm(total=epochs * steps_per_epoch, desc=f"{self.kind} training", unit="step", disable=None, leave=False) as bar:
            for epoch in range(1, epochs + 1):
                losses = []
                for index in minibatches(len(data.ids), cfg.batch_size, rng):
                    ids, _ = pad([data.ids[i] for i in index], self.padding, self._width(data.ids, index))
                    losses.append(float(step(ids.astype(np.int32), data.labels[index], data.weights[index], targets[index], mask[index])))
                    bar.update()
                record = {"epoch": float(epoch), "train_loss": float(np.mean(losses)), "lr": float(schedule(optimizer.iterations))}
                report.steps, report.epochs = report.steps + steps_per_epoch, epoch
                report.history.append(record)
                if held_out is None:
                    continue
                probabilities = self._probabilities(held_out.ids)
                record["val_loss"] = _loss(probabilities, held_out)
                record["val_accuracy"] = float((probabilities.argmax(1) == held_out.labels).mean())
                bar.set_postfix(val_loss=f"{record['val_loss']:.4f}", val_acc=f"{record['val_accuracy']:.3f}")
                if patience.improved(record["val_loss"]):
                    best = model.get_weights(), probabilities
                elif patience.exhausted:
                    report.stopped = "early_stopping"
                    break
        if best is not None:
            model.set_weights(best[0])
            report.validation_probabilities = best[1]
        report.best_val_loss = patience.best_loss
        self._optimizer = optimizer
        return report

    def _step_function(self, optimizer: keras.optimizers.Optimizer, teacher: _Teacher | None) -> Any:
        """One compiled optimizer step: weighted cross-entropy (+ distillation on masked rows), clipped Adam.

        The network ends in a softmax, so its log-probabilities stand in for logits: tempering them gives
        the same distribution as tempering the logits would (they differ by a constant per row).
        """
        model = self._require_model()
        weight, temperature = (teacher.weight, teacher.temperature) if teacher is not None else (0.0, 1.0)
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None, self.num_classes], tf.float32), tf.TensorSpec([None], tf.bool)]

        @tf.function(input_signature=spec)
        def step(ids: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                log_p = tf.math.log(tf.clip_by_value(model(ids, training=True), 1e-7, 1.0))
                losses = -tf.gather(log_p, labels, batch_dims=1)
                loss = tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1e-8)
                if weight:
                    target = tf.nn.softmax(tf.math.log(tf.maximum(targets, 1e-12)) / temperature)
                    student = tf.nn.log_softmax(log_p / temperature)
                    divergence = tf.reduce_sum(target * (tf.math.log(tf.maximum(target, 1e-12)) - student), axis=1)
                    batch = tf.cast(tf.shape(ids)[0], tf.float32)
                    loss += weight * temperature * temperature * tf.reduce_sum(tf.where(mask, divergence, 0.0)) / batch
            variables = model.trainable_variables
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        return step

    # -- prediction ----------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_classes) probabilities; batches of similar length, returned in input order."""
        if not len(texts):
            return np.zeros((0, self.num_classes))
        return self._probabilities(self._require_vocab().ids(texts, self.max_length))

    def _probabilities(self, ids: list[list[int]]) -> np.ndarray:
        model = self._require_model()
        out = np.empty((len(ids), self.num_classes))
        for batch in length_sorted_batches([len(seq) for seq in ids], PREDICT_BATCH):
            padded, _ = pad([ids[i] for i in batch], self.padding, self._width(ids, batch))
            out[batch] = np.asarray(model.predict_on_batch(padded.astype(np.int32)), dtype=np.float64)
        return out / out.sum(axis=1, keepdims=True)

    @property
    def max_length(self) -> int:
        """Tokens kept per text: a brought-in model's fixed width, else ``models.lstm.max_length``."""
        return self.fixed_width if self.fixed_width is not None else self.config.max_length

    def _width(self, ids: list[list[int]], batch: np.ndarray) -> int:
        """The padded width of a batch: its longest text (a masked network), or a brought-in model's fixed width."""
        return self.fixed_width if self.fixed_width is not None else max(len(ids[i]) for i in batch)

    def _encode(self, data: TrainData) -> _Encoded:
        labels = np.asarray(data.labels, dtype=np.int32)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"labels must be in 0..{self.num_classes - 1}")
        weights = np.ones(len(labels), np.float32) if data.weights is None else np.asarray(data.weights, dtype=np.float32)
        return _Encoded(self._require_vocab().ids(data.texts, self.max_length), labels, weights)

    # -- optimizer state (for the unified checkpoint) ------------------------------------------
    def optimizer_state(self) -> OptimizerState | None:
        """The last training run's Adam variables by path (``adam/<weight>_momentum`` …) + its JSON config.

        None before the member has trained since it was built or loaded; as with the torch members,
        every training run starts a fresh optimizer (the seed's recipes), so this is a record.
        """
        if self._optimizer is None:
            return None
        variables = self._optimizer.variables
        return OptimizerState({v.path: np.asarray(v.numpy()) for v in variables},
                              {"type": type(self._optimizer).__name__, "variables": [v.path for v in variables],
                               "config": keras.optimizers.serialize(self._optimizer)})

    def load_optimizer_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Rebuild the optimizer from ``optimizer_state()`` output, for this member's weights."""
        try:
            optimizer = keras.optimizers.deserialize(meta["config"])
            optimizer.build(self._require_model().trainable_variables)
            if [v.path for v in optimizer.variables] != meta["variables"]:
                raise ValueError(f"it has variables {meta['variables'][:3]}…, this model's optimizer {[v.path for v in optimizer.variables][:3]}…")
            for variable in optimizer.variables:
                variable.assign(tensors[variable.path])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"optimizer state does not fit this {self.kind} model: {exc}") from None
        self._optimizer = optimizer

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``architecture.json`` + ``model.safetensors`` + ``vocab.json`` + ``member.json`` under a manifest."""
        model, vocab = self._require_model(), self._require_vocab()
        architecture = keras.saving.serialize_keras_object(model)
        values = zip(model.weights, model.get_weights(), strict=True)
        weights = {f"{index:04d}:{w.path}": np.ascontiguousarray(value) for index, (w, value) in enumerate(values)}

        def write(tmp: Path) -> None:
            write_json(tmp, ARCHITECTURE, architecture)
            save_file(weights, str(tmp / WEIGHTS))
            write_json(tmp, VOCAB, vocab.to_dict())
            write_json(tmp, MEMBER, {"format": FORMAT, "kind": self.kind, "num_classes": self.num_classes, "seed": self.seed,
                                     "padding": self.padding, "fixed_width": self.fixed_width,
                                     "custom_objects": self.custom_objects,
                                     "brought_in": self.brought_in, "keras": keras.__version__,
                                     "config": self.config.model_dump(mode="json", exclude={"backend", "keras"})})

        write_member_dir(Path(directory), self.kind, write)

    @classmethod
    def load(cls, directory: Path) -> KerasLSTMMember:
        """Verify the manifest, rebuild the network from its config (safe mode), then set its weights."""
        directory = Path(directory)
        verify_member_dir(directory, cls.kind)
        meta = read_json(directory / MEMBER)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{directory / MEMBER} does not describe a {cls.kind} member")
        try:
            member = cls(int(meta["num_classes"]), LSTMConfig.model_validate(meta["config"]), int(meta["seed"]))
            member.padding = _padding(meta["padding"])
            member.fixed_width = None if meta["fixed_width"] is None else int(meta["fixed_width"])
            member.custom_objects, member.brought_in = [str(name) for name in meta["custom_objects"]], meta.get("brought_in")
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise CheckpointError(f"{directory / MEMBER} is invalid: {exc}") from None
        member.vocab = Vocabulary.from_dict(read_json(directory / VOCAB))
        model = _deserialize(read_json(directory / ARCHITECTURE), member.custom_objects, CheckpointError)
        try:
            stored = load_file(str(directory / WEIGHTS))
            values = [stored[key] for key in sorted(stored, key=lambda key: int(key.split(":", 1)[0]))]
            shapes = [tuple(w.shape) for w in model.weights]
            if [v.shape for v in values] != shapes:
                raise ValueError(f"{len(values)} arrays of shapes {[v.shape for v in values][:4]}…, the network needs {shapes[:4]}…")
            model.set_weights(values)
        except (SafetensorError, ValueError, OSError) as exc:
            raise CheckpointError(f"{directory / WEIGHTS} does not fit the described network: {exc}") from None
        member.model = model
        return member

    # -- helpers -----------------------------------------------------------------------------------
    def _require_model(self) -> keras.Model:
        if self.model is None:
            raise RuntimeError(f"the {self.kind} member has not been trained or loaded")
        return self.model


def _loss(probabilities: np.ndarray, data: _Encoded) -> float:
    """Weighted cross-entropy of probabilities on a held-out split."""
    losses = -np.log(np.clip(probabilities[np.arange(len(data.labels)), data.labels], 1e-12, None))
    return float((losses * data.weights).sum() / max(float(data.weights.sum()), 1e-8))


def _padding(value: Any) -> Padding:
    if value not in ("pre", "post"):
        raise ValueError(f"padding must be pre or post, not {value!r}")
    padding: Padding = value
    return padding


def _custom_objects(names: Sequence[str]) -> dict[str, Any]:
    """The custom layer classes a model names, imported from installed modules ("module:Name")."""
    objects = {}
    for name in names:
        module, attribute = name.split(":", 1)
        try:
            cls = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"custom object {name!r} cannot be imported: {exc}") from None
        objects[attribute] = objects[keras.saving.get_registered_name(cls)] = cls  # "package>Name" when registered
    return objects


def _deserialize(architecture: Any, custom_objects: Sequence[str], error: type[Exception] = ConfigError) -> keras.Model:
    """A network from its Keras config, in safe mode (no Lambda bytecode), with only the named custom classes."""
    try:
        model = keras.saving.deserialize_keras_object(copy.deepcopy(architecture), custom_objects=_custom_objects(custom_objects), safe_mode=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise error(f"not a Keras network this member can rebuild: {exc}") from None
    if not isinstance(model, keras.Model):
        raise error(f"the architecture describes a {type(model).__name__}, not a Keras model")
    return model


def _check_shapes(model: keras.Model, num_classes: int, path: Path) -> int | None:
    """Refuse a model that cannot read token ids or answer with one probability per label; its fixed input length."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2:
        raise ConfigError(f"{path}: the model must take one input of token ids shaped (batch, time), "
                          f"not {[tuple(i.shape) for i in model.inputs]}")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ConfigError(f"{path}: the model must give one output shaped (batch, classes), not {[tuple(o.shape) for o in model.outputs]}")
    classes = model.outputs[0].shape[1]
    if classes != num_classes:
        raise ConfigError(f"{path}: the model answers with {classes} classes but sentiloop.labels has {num_classes}: "
                          "train it on the same label set, in the same order")
    _embedding_layer(model, path)
    length = model.inputs[0].shape[1]
    return None if length is None else int(length)


def _embedding_layer(model: keras.Model, where: Any) -> keras.layers.Embedding:
    found = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    if len(found) != 1:
        raise ConfigError(f"{where}: the model needs exactly one Embedding layer to read token ids (it has {len(found)})")
    embedding: keras.layers.Embedding = found[0]
    return embedding


def _classifier(model: keras.Model) -> keras.layers.Layer:
    """The last layer with weights: the task layer a transfer starts again."""
    layer: keras.layers.Layer = [layer for layer in model.layers if layer.weights][-1]
    return layer


def _set_embedding_width(architecture: Any, width: int) -> None:
    """Set ``input_dim`` of the (one) Embedding layer in a serialised Keras model, wherever it is nested."""
    if isinstance(architecture, dict):
        if architecture.get("class_name") == "Embedding" and "input_dim" in architecture.get("config", {}):
            architecture["config"]["input_dim"] = width
        for value in architecture.values():
            _set_embedding_width(value, width)
    elif isinstance(architecture, list):
        for value in architecture:
            _set_embedding_width(value, width)

