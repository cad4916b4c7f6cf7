"""Frozen-layer caching for the BERT fine-tune: a frozen layer's output for a text is computed once.

The seed's fine-tune trains the head alone for three epochs, then the top two encoder layers with
it. While a layer is frozen, its output for a given text never changes, so the retrain runs the
frozen lower layers once per training and validation text (the first time a batch needs it) and
trains the rest on what they returned: after the first epoch a head-only epoch costs a few matrix
products instead of a full encoder pass, a top-two epoch a third of one on MiniLM's six layers.

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
    """One split's lower-layer outputs per text (unpadded), and its pooled features, each computed the
    first time a batch needs that text and kept: never more work than running the frozen layers in the
    loop, and none at all from the second epoch on."""

    def __init__(self, split: SplitEncoder, encoded: Sequence[Sequence[int]], pad_id: int) -> None:
        self.split = split
        self.encoded = encoded
        self.pad_id = pad_id
        self.lengths = np.array([len(seq) for seq in encoded])
        self.hidden: list[torch.Tensor | None] = [None] * len(encoded)
        self.pooled = torch.zeros(len(encoded), split.config.hidden_size)
        self.pooled_known = np.zeros(len(encoded), dtype=bool)

    def _lower(self, index: np.ndarray) -> None:
        missing = [i for i in index if self.hidden[i] is None]
        if not missing:
            return
        with eval_mode(self.split.model), torch.no_grad():
            out = self.split.lower(*pad_batch([self.encoded[i] for i in missing], self.pad_id))
        for row, i in enumerate(missing):
            self.hidden[i] = out[row, : self.lengths[i]].clone()

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The lower layers' outputs for ``index``, zero-padded, with their attention mask."""
        self._lower(index)
        rows = [self.hidden[i] for i in index]
        width = int(self.lengths[index].max())
        hidden = torch.zeros(len(index), width, self.split.config.hidden_size)
        mask = torch.zeros(len(index), width, dtype=torch.long)
        for row, (i, states) in enumerate(zip(index, rows)):
            assert states is not None
            hidden[row, : self.lengths[i]] = states
            mask[row, : self.lengths[i]] = 1
        return hidden, mask

    def pooled_features(self, index: np.ndarray) -> torch.Tensor:
        """The classifier's inputs for ``index`` with the top layers as they are now (eval mode).

        Only valid while the top layers are frozen (the head-only phase): that is when they are used."""
        missing = index[~self.pooled_known[index]]
        if len(missing):
            hidden, mask = self.batch(missing)
            with eval_mode(self.split.model), torch.no_grad():
                self.pooled[torch.as_tensor(missing)] = self.split.upper_pooled(hidden, mask)
            self.pooled_known[missing] = True
        return self.pooled[torch.as_tensor(index)]

    def logits(self, index: np.ndarray, head_only: bool) -> torch.Tensor:
        """Logits of ``index`` in the model's current train/eval mode: from pooled features (head-only
        phase) or through the top layers (from the unfreezing epoch on)."""
        if head_only:
            return self.split.head(self.pooled_features(index))
        return self.split.head(self.split.upper_pooled(*self.batch(index)))


class eval_mode:
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
