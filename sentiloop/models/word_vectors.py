"""Initial word vectors for the recurrent members, from the bundled MiniLM's word-piece embeddings.

No download and no framework: numpy over the safetensors file that ships with the package, so the
torch and the Keras LSTM start from the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sentiloop.models.pretrained import BUNDLED_MINILM, resolve_pretrained


@lru_cache(maxsize=1)
def _minilm_token_embeddings() -> tuple[Any, np.ndarray]:
    """The bundled MiniLM's word-piece tokenizer and input embedding matrix (read once, ~1 s)."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    path, _ = resolve_pretrained(BUNDLED_MINILM)
    tokenizer = Tokenizer.from_file(str(Path(path, "tokenizer.json")))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    with safe_open(str(Path(path, "model.safetensors")), framework="numpy") as weights:
        matrix = weights.get_tensor("embeddings.word_embeddings.weight").astype(np.float32)
    return tokenizer, matrix


@lru_cache(maxsize=4)
def _minilm_basis(dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(center, projection, scale) mapping a 384-dim word-piece vector to ``dim`` unit-variance values.

    Fitted once on MiniLM's whole word-piece table (not on a member's vocabulary), so a word gets the same
    initial vector in every member: a transfer challenger's new words live in its champion's space.
    """
    _, matrix = _minilm_token_embeddings()
    center = matrix.mean(0)
    if dim < matrix.shape[1]:
        centred = matrix - center
        _, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))  # ascending eigenvalues; 384 x 384
        top = vectors[:, -dim:][:, ::-1]
        top = top * np.sign(top[np.abs(top).argmax(0), np.arange(dim)])  # fixed signs: same basis everywhere
        projection = top.astype(np.float32)  # the top principal directions
    else:
        projection = np.eye(matrix.shape[1], dim, dtype=np.float32)  # identity, zero-padded beyond 384
    scale = float(((matrix - center) @ projection).std(ddof=1))
    return center, projection, scale


def pretrained_vectors(words: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial vectors (float32) for ``words`` from MiniLM's input embeddings, and which words got one.

    A word's vector is the mean of its word pieces' embeddings (a word that is only [UNK] gets none,
    and a zero row), centred, projected on the top ``dim`` principal directions (when ``dim`` < 384)
    and scaled to unit variance, the scale of a freshly initialised embedding.
    """
    tokenizer, matrix = _minilm_token_embeddings()
    center, projection, scale = _minilm_basis(dim)
    unk = tokenizer.token_to_id("[UNK]")
    vectors = np.zeros((len(words), dim), dtype=np.float32)
    found = np.zeros(len(words), dtype=bool)
    for row, encoding in enumerate(tokenizer.encode_batch(list(words), add_special_tokens=False) if words else []):
        pieces = [i for i in encoding.ids if i != unk]
        if pieces:
            vectors[row] = (matrix[pieces].mean(0) - center) @ projection / scale
            found[row] = True
    return vectors, found
