"""Frozen-layer caching for the BERT fine-tune: a frozen layer's output for a text is computed once.

The seed's fine-tune trains the head alone for three epochs, then the top two encoder layers with
it. While a layer is frozen, its output for a given text never changes, so the retrain runs the
frozen lower layers once over the training and validation texts and trains the rest on what they
returned: a head-only epoch costs a few matrix products instead of a full encoder pass, a top-two
epoch a third of one on MiniLM's six layers.

Frozen layers run in eval mode (no dropout), which is what makes their output a function of the text;
it is the usual practice for frozen feature extractors, and the only difference from running them in
the training loop. Supported: BERT-family sequence classifiers (``<encoder>.embeddings``,
``<encoder>.encoder.layer``, an optional pooler, ``dropout`` and ``classifier`` on top), which covers
the bundled MiniLM and the Korean BERT checkpoints; anything else trains uncached.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from sentiloop.models.torch_common import length_sorted_batches


def supports_prefix_cache(model: PreTrainedModel) -> bool:
    """Whether ``model`` has the BERT-family layout :class:`FrozenPrefix` splits at a layer boundary."""
    encoder = model.base_model
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    return (isinstance(layers, torch.nn.ModuleList) and hasattr(encoder, "embeddings") and hasattr(encoder, "pooler")
            and isinstance(getattr(model, "classifier", None), torch.nn.Linear) and hasattr(model, "dropout")
            and not model.config.is_decoder)


class SplitEncoder:
    """``model`` seen as (frozen lower layers) + (trainable top layers → pooler → dropout → classifier)."""

    def __init__(self, model: PreTrainedModel, split_at: int) -> None:
        self.model = model
        self.config = model.config
        encoder = model.base_model
        layers = encoder.get_submodule("encoder.layer")
        assert isinstance(layers, torch.nn.ModuleList), "check supports_prefix_cache first"
        self.layers = layers
        self.embeddings = encoder.get_submodule("embeddings")
        self.pooler: torch.nn.Module | None = getattr(encoder, "pooler", None)
        self.dropout, self.classifier = model.get_submodule("dropout"), model.get_submodule("classifier")
        if not 0 <= split_at <= len(self.layers):
            raise ValueError(f"split_at must be 0..{len(self.layers)}, got {split_at}")
        self.split_at = split_at

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers (embeddings, then layers ``[0, split_at)``)."""
        hidden = self.embeddings(input_ids=input_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers[: self.split_at]:
            hidden = layer(hidden, mask)
        return hidden

    def upper_pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's input from the lower layers' output: top layers, then the pooler (or [CLS])."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers[self.split_at :]:
            hidden = layer(hidden, mask)
        return self.pooler(hidden) if self.pooler is not None else hidden[:, 0]

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class FrozenPrefix:
    """One split's lower-layer outputs (per text, unpadded) and, once asked, its pooled features."""

    def __init__(self, split: SplitEncoder, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> None:
        self.split = split
        self.lengths = np.array([len(seq) for seq in encoded])
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
        self.pooled: torch.Tensor | None = None
        self._batch_size = batch_size
        with _eval(split.model), torch.inference_mode():
            for index in length_sorted_batches(self.lengths.tolist(), batch_size):
                ids, mask = pad_batch([encoded[i] for i in index], pad_id)
                out = split.lower(ids, mask)
                for row, i in enumerate(index):
                    self.hidden[i] = out[row, : self.lengths[i]].clone()

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached hidden states of ``index``, zero-padded, with their attention mask."""
        width = int(self.lengths[index].max())
        hidden = torch.zeros(len(index), width, self.hidden[index[0]].size(-1))
        mask = torch.zeros(len(index), width, dtype=torch.long)
        for row, i in enumerate(index):
            hidden[row, : self.lengths[i]] = self.hidden[i]
            mask[row, : self.lengths[i]] = 1
        return hidden, mask

    def pooled_features(self) -> torch.Tensor:
        """(n, hidden) classifier inputs with the top layers as they are now (eval mode); computed once."""
        if self.pooled is None:
            pooled = torch.empty(len(self.lengths), self.split.config.hidden_size)
            with _eval(self.split.model), torch.inference_mode():
                for index in length_sorted_batches(self.lengths.tolist(), self._batch_size):
                    pooled[torch.as_tensor(index)] = self.split.upper_pooled(*self.batch(index))
            self.pooled = pooled.clone()  # a normal tensor: inference-mode tensors cannot enter autograd
        return self.pooled

    def logits(self, index: np.ndarray, head_only: bool) -> torch.Tensor:
        """Logits of ``index`` in the model's current train/eval mode: from pooled features (head-only
        phase) or through the top layers (from the unfreezing epoch on)."""
        if head_only:
            return self.split.head(self.pooled_features()[torch.as_tensor(index)])
        return self.split.head(self.split.upper_pooled(*self.batch(index)))


class _eval:
    """Context: the model in eval mode, its previous mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest sequence (dynamic padding) and their attention mask."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
