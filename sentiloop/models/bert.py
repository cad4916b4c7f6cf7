"""The BERT member: a pretrained transformer encoder with a new classification head, tuned on CPU.

Two ways to train share one loop (:meth:`BertMember._train`), which differ only in the optimiser's
parameter groups and in which parameters may learn in each epoch:

* ``fit`` — plain fine-tuning: every parameter at ``config.learning_rate``.
* ``fine_tune`` — the seed's retraining recipe: head re-initialised (then fitted as a linear probe on
  the frozen encoder), encoder at 1e-5 and head at 1e-3, only the head trainable at first, the top
  encoder layers unfrozen from a later epoch.

Both use AdamW (no decay on biases and LayerNorm), a linear warmup/decay schedule, dynamic padding,
per-example weights, and early stopping on validation loss with the best weights restored.
Checkpoints hold safetensors weights, the model's config.json and the tokenizer's JSON files; loading
rebuilds the model from that config without any network access and never unpickles anything.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, get_linear_schedule_with_warmup

from sentiloop.config import BertConfig, ModelsConfig, Settings
from sentiloop.errors import CheckpointError, ConfigError, DataError
from sentiloop.files import read_json
from sentiloop.models.base import FitReport, TokenizerFit, TrainData, WarmStart
from sentiloop.models.bert_prefix import FrozenPrefix, SplitEncoder, eval_mode, pad_batch, supports_prefix_cache
from sentiloop.models.checkpoint import verify_member_dir, write_json, write_member_dir
from sentiloop.models.fitting import OptimizerState, length_sorted_batches
from sentiloop.models.pretrained import resolve_pretrained
from sentiloop.models.torch_common import (
    EarlyStopping,
    average_gradients,
    data_parallel_rank,
    named_optimizer_state,
    seeded,
    weighted_cross_entropy,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
MEMBER_FILE = "member.json"
GRAD_CLIP = 1.0  # the usual max-norm for BERT fine-tuning; keeps the fresh head's first steps sane
MAX_EPOCHS = 5  # the seed: "at most 5 epochs, early stopping required"
PROBE_EXAMPLES = 1000  # the linear probe's sample: plenty for a linear head, one short encoder pass
GROUP_BATCHES = 16  # batches per length-sorted pool in training (see length_grouped_batches)
_LAYER_PATHS = ("encoder.layer", "transformer.layer")  # BERT/RoBERTa/ELECTRA, DistilBERT
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


EpochHook = Callable[[int], None]


class BertMember:
    """A sequence classifier over a pretrained encoder (default: all-MiniLM-L6-v2, bundled offline)."""

    kind: ClassVar[str] = "bert"

    def __init__(self, num_classes: int, config: BertConfig, seed: int = 13) -> None:
        source, local_only = resolve_pretrained(config.model)
        with seeded(seed):  # the new head's initial weights depend on the seed
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_classes, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        self._attach(num_classes, config, seed, model, tokenizer)

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelsConfig) -> BertMember:
        return cls(len(settings.labels), models.bert, seed=models.seed)

    def _attach(self, num_classes: int, config: BertConfig, seed: int, model: PreTrainedModel, tokenizer: Any) -> None:
        self.num_classes = num_classes
        self.config = config
        self.seed = seed
        self.model = model
        self.tokenizer = tokenizer
        self._optimizer_state: OptimizerState | None = None

    # -- prediction ---------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_classes) softmax probabilities; batches are length-sorted, rows keep input order."""
        if len(texts) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return torch.softmax(self._logits(self._encode(texts)), dim=-1).numpy()

    def tokenizer_fit(self, texts: Sequence[str]) -> TokenizerFit:
        """Unknown-token share and pieces per word: what says that a vocabulary cannot read a script."""
        if not texts:
            return TokenizerFit(0.0, 0.0)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        pieces, words = sum(len(seq) for seq in ids), sum(len(text.split()) for text in texts)
        unknown = self.tokenizer.unk_token_id
        unknown_pieces = sum(seq.count(unknown) for seq in ids) if unknown is not None else 0
        return TokenizerFit(unknown_pieces / pieces if pieces else 0.0, pieces / words if words else 0.0)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``; padding happens per batch."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)
        return encoded["input_ids"]

    def _collate(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence in the batch (dynamic padding) and build the attention mask."""
        ids, mask = pad_batch(sequences, self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}

    def _logits(self, encoded: list[list[int]]) -> torch.Tensor:
        """Eval-mode logits for pre-tokenised texts, in their original order."""
        logits = torch.empty((len(encoded), self.num_classes), dtype=torch.float32)

        def keep(index: np.ndarray, output: Any) -> None:
            logits[torch.as_tensor(index)] = output.logits.float()

        self._eval_pass(encoded, keep)
        return logits

    def _eval_pass(self, encoded: list[list[int]], on_batch: Callable[[np.ndarray, Any], None]) -> None:
        """One eval-mode, no-grad pass over length-sorted batches; ``on_batch(rows, model output)``."""
        with eval_mode(self.model), torch.inference_mode():
            for index in length_sorted_batches([len(seq) for seq in encoded], self.config.batch_size):
                on_batch(index, self.model(**self._collate([encoded[i] for i in index])))

    # -- training -----------------------------------------------------------------------------
    def fit(self, train: TrainData, validation: TrainData | None = None) -> FitReport:
        """Fine-tune every parameter at ``config.learning_rate`` for ≤ ``config.epochs`` epochs; with
        ``config.train_top_layers`` only those layers and the head (from a linear probe), the frozen
        layers below computed once per text."""
        if (top := self.config.train_top_layers) is not None:
            return self.fine_tune(train, validation, encoder_lr=self.config.learning_rate, head_lr=self.config.learning_rate,
                                  unfreeze_from_epoch=0, top_layers=top, epochs=self.config.epochs, max_steps=self.config.max_steps)
        self._check_labels(train)
        self.model.requires_grad_(True)
        groups = _param_groups(self.model.named_parameters(), self.config.learning_rate, self.config.weight_decay)
        with seeded(self.seed):
            validator = self._token_validator(validation) if validation is not None and len(validation) else None
            return self._train(train, self._token_inputs(train), validator, groups, epochs=self.config.epochs,
                               max_steps=self.config.max_steps)

    def warm_start(self, train: TrainData, validation: TrainData, budget: WarmStart) -> tuple[BertMember, FitReport]:
        """The seed's BERT "fine-tune" on a copy; "top 2 layers from the 3rd epoch" (epochs count from 0).

        With ``retrain.executor: ray`` and ``retrain.ray.bert_workers`` > 1 it runs data-parallel on
        that many Ray Train workers (``sentiloop.models.bert_ray``), with the same result contract.
        """
        cluster = budget.retrain.ray
        if budget.retrain.executor == "ray" and cluster is not None and cluster.bert_workers > 1 and data_parallel_rank()[1] == 1:
            from sentiloop.models.bert_ray import fine_tune_data_parallel

            return fine_tune_data_parallel(self, train, validation, budget, cluster.bert_workers)
        return self.fine_tune_copy(train, validation)

    def fine_tune_copy(self, train: TrainData, validation: TrainData) -> tuple[BertMember, FitReport]:
        """The retrain's fine-tune, here, on a copy (the champion keeps serving)."""
        challenger = copy.deepcopy(self)
        report = challenger.fine_tune(train, validation, epochs=self.config.fine_tune_epochs, max_steps=self.config.fine_tune_max_steps,
                                      unfreeze_from_epoch=2, top_layers=2)
        return challenger, report

    def fine_tune(
        self,
        train: TrainData,
        validation: TrainData | None = None,
        *,
        encoder_lr: float = 1e-5,
        head_lr: float = 1e-3,
        reinit_head: bool = True,
        unfreeze_from_epoch: int = 3,
        top_layers: int = 2,
        epochs: int = MAX_EPOCHS,
        max_steps: int | None = None,
        cache_frozen: bool = True,
    ) -> FitReport:
        """The seed's BERT retraining: new head, differential learning rates, progressive unfreezing.

        The re-initialised head is first fitted as a linear probe on the frozen encoder (LP-FT, Kumar
        et al. 2022): fine-tuning from a random head sends large, random gradients into the encoder
        and distorts the features the champion learnt (forgetting), and a short step budget leaves
        the head half-trained; from the probe, the fine-tune adapts instead of relearning.

        Epochs count from 0, as in the seed's ``for epoch in range(epochs): if epoch > 2:
        unfreeze_top_layers(model, num_layers=2)``: with the defaults, epochs 0-2 train the head
        only and epochs 3-4 also the top two encoder layers (and the pooler above them). The
        embeddings and lower layers stay frozen, as in the seed. With ``cache_frozen`` (and a
        BERT-family model) frozen layers run once per text (:mod:`sentiloop.models.bert_prefix`).
        """
        if not 1 <= epochs <= MAX_EPOCHS:
            raise ValueError(f"epochs must be 1..{MAX_EPOCHS} (the seed caps BERT retraining at {MAX_EPOCHS}), got {epochs}")
        if unfreeze_from_epoch < 0 or top_layers < 0:
            raise ValueError(f"unfreeze_from_epoch and top_layers must be >= 0, got {unfreeze_from_epoch} and {top_layers}")
        self._check_labels(train)
        encoder = self.model.base_model
        head = [(name, p) for name, p in self.model.named_parameters() if not name.startswith(self.model.base_model_prefix + ".")]
        groups = _param_groups(encoder.named_parameters(), encoder_lr, self.config.weight_decay)
        groups += _param_groups(head, head_lr, self.config.weight_decay)
        has_validation = validation is not None and len(validation) > 0
        with seeded(self.seed):
            if reinit_head:
                self._reinit_head()
            if cache_frozen and supports_prefix_cache(self.model):
                layers = len(_transformer_layers(encoder))
                split = SplitEncoder(self.model, max(0, layers - top_layers))
                phases = _CachedPhases(self, split, train, validation if has_validation else None, unfreeze_from_epoch)
                if reinit_head:
                    rows, features = phases.probe_features(self.seed)
                    weights = _weights(train)
                    self._fit_probe(features, _labels(train)[torch.as_tensor(rows)],
                                    None if weights is None else weights[torch.as_tensor(rows)])
                inputs, validator = phases.inputs(), phases.validator()
            else:
                phases = None
                if reinit_head:
                    self._probe_head(train)
                inputs = self._token_inputs(train)
                validator = self._token_validator(validation) if validation is not None and has_validation else None

            def on_epoch(epoch: int) -> None:
                self.apply_unfreezing(epoch, unfreeze_from_epoch, top_layers)
                if phases is not None:
                    phases.epoch = epoch

            return self._train(train, inputs, validator, groups, epochs=epochs, max_steps=max_steps, on_epoch=on_epoch)

    def apply_unfreezing(self, epoch: int, unfreeze_from_epoch: int, top_layers: int) -> None:
        """Set ``requires_grad`` for ``epoch`` (0-based) of the progressive-unfreezing schedule."""
        self.model.requires_grad_(False)
        for module in self._head_modules():
            module.requires_grad_(True)
        if epoch >= unfreeze_from_epoch:
            for module in self._top_encoder_modules(top_layers):
                module.requires_grad_(True)

    def _head_modules(self) -> list[torch.nn.Module]:
        """Everything the task model adds on top of the pretrained encoder (the classifier)."""
        return [module for name, module in self.model.named_children() if name != self.model.base_model_prefix]

    def _top_encoder_modules(self, count: int) -> list[torch.nn.Module]:
        """The top ``count`` transformer layers plus the pooler that reads their output."""
        encoder = self.model.base_model
        layers = _transformer_layers(encoder)
        pooler = getattr(encoder, "pooler", None)
        return list(layers)[max(0, len(layers) - count) :] + ([pooler] if pooler is not None else [])

    def _reinit_head(self) -> None:
        """Fresh head weights (the seed sets the classifier's kernel to glorot_uniform), from the member's own seed."""
        generator = torch.Generator().manual_seed(self.seed)
        for head in self._head_modules():
            for module in head.modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.xavier_uniform_(module.weight, generator=generator)
                    if module.bias is not None:
                        torch.nn.init.zeros_(module.bias)

    def _probe_head(self, train: TrainData) -> None:
        """Fit the head's output layer as a linear probe on frozen-encoder features of a training sample."""
        output = self._output_layer()
        index = np.sort(np.random.default_rng(self.seed).choice(len(train), size=min(len(train), PROBE_EXAMPLES), replace=False))
        encoded = self._encode([train.texts[i] for i in index])
        features: list[torch.Tensor] = []
        order: list[int] = []
        hook = output.register_forward_hook(lambda module, inputs, result: features.append(inputs[0].float()))
        try:
            self._eval_pass(encoded, lambda rows, _: order.extend(rows.tolist()))
        finally:
            hook.remove()
        rows = torch.as_tensor(index[order])
        weights = _weights(train)
        self._fit_probe(torch.cat(features).clone(), _labels(train)[rows], None if weights is None else weights[rows])

    def _output_layer(self) -> torch.nn.Linear:
        return [m for head in self._head_modules() for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]

    def _fit_probe(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> None:
        """L2-regularised logistic regression (sklearn's C=1) of ``y`` on ``x``, written into the output layer."""
        output = self._output_layer()
        weight = torch.zeros_like(output.weight, requires_grad=True)
        bias = torch.zeros(output.out_features, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = weighted_cross_entropy(x @ weight.T + bias, y, w) + 0.5 * weight.pow(2).sum() / len(x)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            output.weight.copy_(weight)
            if output.bias is not None:
                output.bias.copy_(bias)

    def _token_inputs(self, data: TrainData) -> _Inputs:
        """Rows of ``data`` through the whole model, tokenised once (no cache)."""
        encoded = self._encode(data.texts)
        return _Inputs(np.array([len(seq) for seq in encoded]), lambda rows: self.model(**self._collate([encoded[i] for i in rows])).logits)

    def _token_validator(self, validation: TrainData) -> _Validator:
        inputs = self._token_inputs(validation)
        return _Validator(self.model, self.config, validation, inputs, self.num_classes)

    def _train(
        self,
        train: TrainData,
        inputs: _Inputs,
        checker: _Validator | None,
        groups: list[dict[str, Any]],
        *,
        epochs: int,
        max_steps: int | None,
        on_epoch: EpochHook | None = None,
    ) -> FitReport:
        """The one training loop: AdamW over ``groups``, linear warmup/decay, early stopping."""
        self._check_labels(train)
        labels, weights = _labels(train), _weights(train)
        planned = epochs * math.ceil(len(train) / self.config.batch_size)
        total = planned if max_steps is None else min(max_steps, planned)
        optimizer = torch.optim.AdamW(groups)
        scheduler = get_linear_schedule_with_warmup(optimizer, round(self.config.warmup_ratio * total), total)
        report = FitReport(stopped="max_steps" if total < planned else "completed")
        batches = self._epoch_batches(inputs.lengths, epochs, on_epoch)
        running: list[float] = []
        self.model.train()
        with tqdm(total=total, desc="bert", unit="step", disable=None) as bar:
            for epoch, index in itertools.islice(batches, total):
                running.append(self._step(inputs, labels, weights, index, optimizer, scheduler))
                report.steps, report.epochs = report.steps + 1, epoch + 1
                bar.update()
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}", epoch=epoch)
                if checker is not None and report.steps % self.config.eval_every == 0:
                    if checker.check(report, running):
                        report.stopped = "early_stopping"
                        break
                    running = []
        if checker is not None:
            if report.steps % self.config.eval_every != 0:
                checker.check(report, running)
            checker.stopper.restore(self.model)
            report.best_val_loss = checker.stopper.best
            if checker.stopper.best_logits is not None:
                report.validation_probabilities = torch.softmax(checker.stopper.best_logits, dim=-1).numpy()
        self.model.eval()
        self._optimizer_state = named_optimizer_state(optimizer, self.model)
        return report

    def _epoch_batches(self, lengths: np.ndarray, epochs: int, on_epoch: EpochHook | None) -> Iterator[tuple[int, np.ndarray]]:
        """(epoch, index batch) pairs; ``on_epoch`` runs before each epoch's first batch."""
        rng = np.random.default_rng(self.seed)
        for epoch in range(epochs):
            if on_epoch is not None:
                on_epoch(epoch)
            for index in length_grouped_batches(lengths, self.config.batch_size, rng):
                yield epoch, index

    def _step(
        self,
        inputs: _Inputs,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        index: np.ndarray,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> float:
        """One optimiser step on one batch; returns its (weighted) training loss.

        Data-parallel (Ray Train): every rank walks the same batches, trains on its slice of each and
        the gradients are averaged before the step, so all ranks keep identical weights.
        """
        rank, world = data_parallel_rank()
        index = index[rank::world]
        loss = torch.zeros(())
        if len(index):
            rows = torch.as_tensor(index)
            loss = weighted_cross_entropy(inputs.logits(index), labels[rows], None if weights is None else weights[rows])
            loss.backward()
        if world > 1:
            average_gradients([p for p in self.model.parameters() if p.requires_grad], len(index))
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _check_labels(self, data: TrainData) -> None:
        if len(data) == 0:
            raise DataError("no training examples")
        labels = np.asarray(data.labels)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"labels must be in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")

    # -- optimiser state ------------------------------------------------------------------------
    def optimizer_state(self) -> OptimizerState | None:
        """The last training run's AdamW state by parameter name (None before any training).

        A new ``fit``/``fine_tune`` starts a fresh optimiser on purpose (new parameter groups and
        schedule, as in the seed); this state is kept so a unified checkpoint can record it.
        """
        return self._optimizer_state

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path, *, with_optimizer: bool = False) -> None:
        """Write weights (safetensors), config.json, tokenizer files and member.json, with a manifest.

        ``with_optimizer`` adds the AdamW state (about twice the weights' size) when there is one.
        """
        optimizer = self._optimizer_state if with_optimizer else None

        def write(tmp: Path) -> None:
            save_model(self.model, str(tmp / WEIGHTS_FILE))
            self.model.config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            write_json(tmp, MEMBER_FILE, {"kind": self.kind, "num_classes": self.num_classes, "seed": self.seed,
                                          "config": self.config.model_dump(mode="json")})
            if optimizer is not None:
                save_file(optimizer.tensors, str(tmp / OPTIMIZER_FILE))
                write_json(tmp, OPTIMIZER_META, optimizer.meta)

        write_member_dir(Path(directory), self.kind, write)

    @classmethod
    def load(cls, directory: Path) -> BertMember:
        """Rebuild from a verified checkpoint, offline: config.json → model, then safetensors weights."""
        directory = Path(directory)
        manifest = verify_member_dir(directory, cls.kind)
        meta = read_json(directory / MEMBER_FILE)
        try:
            config = BertConfig.model_validate(meta["config"])
            num_classes = int(meta["num_classes"])
            model_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
            if model_config.num_labels != num_classes:
                raise CheckpointError(f"{directory}: config.json has {model_config.num_labels} labels, member.json {num_classes}")
            model = AutoModelForSequenceClassification.from_config(model_config)
            load_model(model, str(directory / WEIGHTS_FILE), strict=True)
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, OSError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{directory} is not a loadable BERT member: {exc}") from None
        model.eval()
        member = cls.__new__(cls)
        member._attach(num_classes, config, int(meta["seed"]), model, tokenizer)
        if OPTIMIZER_FILE in manifest["files"]:
            member._optimizer_state = OptimizerState(load_file(str(directory / OPTIMIZER_FILE)), read_json(directory / OPTIMIZER_META))
        return member


@dataclass
class _Inputs:
    """Training or validation rows as the loop sees them: their token lengths (for batching) and a
    forward pass giving their logits in the model's current train/eval mode."""

    lengths: np.ndarray
    logits: Callable[[np.ndarray], torch.Tensor]


class _CachedPhases:
    """The fine-tune's inputs over cached frozen-layer outputs, following the unfreezing schedule:
    pooled features before ``unfreeze_from_epoch`` (head only), the top layers' input after it."""

    def __init__(self, member: BertMember, split: SplitEncoder, train: TrainData, validation: TrainData | None,
                 unfreeze_from_epoch: int) -> None:
        pad_id = member.tokenizer.pad_token_id
        self.member, self.unfreeze_from_epoch, self.epoch = member, unfreeze_from_epoch, 0
        self.train = FrozenPrefix(split, member._encode(train.texts), pad_id)
        self.validation = validation
        self.held_out = None if validation is None else FrozenPrefix(split, member._encode(validation.texts), pad_id)

    def _head_only(self) -> bool:
        return self.epoch < self.unfreeze_from_epoch

    def probe_features(self, seed: int) -> tuple[np.ndarray, torch.Tensor]:
        """(rows, pooled features) of the training sample the linear probe is fitted on; the features
        stay cached for the head-only epochs."""
        lengths = self.train.lengths
        rows = np.random.default_rng(seed).choice(len(lengths), size=min(len(lengths), PROBE_EXAMPLES), replace=False)
        rows = rows[np.argsort(lengths[rows], kind="stable")]  # batches of similar length pad little
        size = self.member.config.batch_size
        return rows, torch.cat([self.train.pooled_features(rows[i : i + size]) for i in range(0, len(rows), size)])

    def inputs(self) -> _Inputs:
        return _Inputs(self.train.lengths, lambda rows: self.train.logits(rows, self._head_only()))

    def validator(self) -> _Validator | None:
        held_out, validation = self.held_out, self.validation
        if held_out is None or validation is None:
            return None
        return _Validator(self.member.model, self.member.config, validation,
                          _Inputs(held_out.lengths, lambda rows: held_out.logits(rows, self._head_only())), self.member.num_classes)


class _Validator:
    """Validation loss/accuracy on a fixed split, feeding early stopping and the fit history."""

    def __init__(self, model: PreTrainedModel, config: BertConfig, data: TrainData, inputs: _Inputs, num_classes: int) -> None:
        self.model, self.batch_size, self.inputs, self.num_classes = model, config.batch_size, inputs, num_classes
        self.labels, self.weights = _labels(data), _weights(data)
        self.stopper = EarlyStopping(config.patience)

    def loss_and_accuracy(self) -> tuple[float, float, torch.Tensor]:
        logits = torch.empty((len(self.labels), self.num_classes))
        with eval_mode(self.model), torch.inference_mode():
            for index in length_sorted_batches(self.inputs.lengths.tolist(), self.batch_size):
                logits[torch.as_tensor(index)] = self.inputs.logits(index).float()
        loss = float(weighted_cross_entropy(logits, self.labels, self.weights))
        return loss, float((logits.argmax(dim=-1) == self.labels).float().mean()), logits

    def check(self, report: FitReport, running: list[float]) -> bool:
        """Evaluate, record the history row, and say whether early stopping fires."""
        loss, accuracy, logits = self.loss_and_accuracy()
        row = {"step": report.steps, "epoch": report.epochs, "train_loss": float(np.mean(running)) if running else math.nan,
               "val_loss": loss, "val_accuracy": accuracy}
        report.history.append(row)
        log.info("bert step %(step)d epoch %(epoch)d: train %(train_loss).4f, val %(val_loss).4f, acc %(val_accuracy).4f", row)
        return self.stopper.update(loss, self.model, logits)


def _labels(data: TrainData) -> torch.Tensor:
    return torch.as_tensor(np.asarray(data.labels), dtype=torch.long)


def _weights(data: TrainData) -> torch.Tensor | None:
    return None if data.weights is None else torch.as_tensor(np.asarray(data.weights), dtype=torch.float32)


def _transformer_layers(encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks, wherever this architecture keeps it."""
    for path in _LAYER_PATHS:
        try:
            layers = encoder.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ConfigError(f"models.bert.model: cannot find the transformer layers of {type(encoder).__name__} (looked for {', '.join(_LAYER_PATHS)})")


def _param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups at ``lr``: weights with decay, biases and LayerNorm without (BERT practice)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in named:
        (no_decay if name.endswith(_NO_DECAY) else decay).append(param)
    return [group for group in ({"params": decay, "lr": lr, "weight_decay": weight_decay},
                                {"params": no_decay, "lr": lr, "weight_decay": 0.0}) if group["params"]]


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled training batches of similar length, so dynamic padding pads little.

    Random pools of ``GROUP_BATCHES`` batches are sorted by length and cut into batches, whose order
    is then shuffled: on the VADER data the mean padded width drops from 51 to 27 tokens (a step
    costs about half), while each batch stays as mixed in domain and label as a plain shuffle.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    for i in rng.permutation(len(batches)):
        yield batches[i]
