"""The vocabulary of a team's Keras model, read from the files Keras tools write, as a :class:`Vocabulary`.

A model reads ids, so its vocabulary must say which word each id stands for, and sentiloop's ids mean
what the model's meant: 0 padding, 1 every word outside the vocabulary (``Tokenizer(oov_token=...)``,
TextVectorization's ``[UNK]``), then the words. Accepted:

* a Keras ``Tokenizer.to_json()`` file (its ``word_index``; it must have been made with an ``oov_token``);
* a JSON object word → id (a ``word_index``, ids from 1, the OOV token at 1);
* a JSON list, or a text file with one word per line, where position is the id
  (``TextVectorization.get_vocabulary()``: ``""`` and ``[UNK]`` first);
* sentiloop's own ``vocab.json``.

Texts are split by sentiloop's tokenizer (``models.lstm.tokenizer``), so the words should be what it
yields: lower-cased, punctuation apart, as Keras' own tokenizers do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentiloop.errors import ConfigError
from sentiloop.models.vocab import FORMAT, PAD_TOKEN, UNK_TOKEN, Vocabulary


def read_vocabulary(path: Path, tokenizer: str) -> Vocabulary:
    """The vocabulary in ``path``, id for id; a file whose ids cannot be sentiloop's is refused, saying why."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the vocabulary: {exc}") from None
    if path.suffix != ".json":
        lines = [line.rstrip("\r") for line in text.split("\n")]
        return _by_position(lines[:-1] if lines and not lines[-1] else lines, path, tokenizer)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if isinstance(data, list):
        return _by_position(data, path, tokenizer)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a word → id object or a list of words, found {type(data).__name__}")
    if data.get("format") == FORMAT:
        return Vocabulary.from_dict(data)
    if data.get("class_name") == "Tokenizer":
        return _from_keras_tokenizer(data, path, tokenizer)
    return _by_id(data, path, tokenizer)


def _from_keras_tokenizer(data: dict[str, Any], path: Path, tokenizer: str) -> Vocabulary:
    config = data.get("config", {})
    oov = config.get("oov_token")
    try:
        index = json.loads(config["word_index"]) if isinstance(config.get("word_index"), str) else config["word_index"]
    except (KeyError, json.JSONDecodeError):
        raise ConfigError(f"{path}: a Keras Tokenizer file without a readable word_index") from None
    if oov is None or index.get(oov) != 1:
        raise ConfigError(f"{path}: the Tokenizer was made without an oov_token, so id 1 is the word "
                          f"{next((w for w, i in index.items() if i == 1), '?')!r} and unknown words were dropped from its "
                          "training texts; rebuild it with Tokenizer(oov_token='<OOV>') and retrain the model")
    return _by_id(index, path, tokenizer)


def _by_id(index: dict[str, Any], path: Path, tokenizer: str) -> Vocabulary:
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in index.values()):
        raise ConfigError(f"{path}: every id of the word → id object must be an integer")
    ids = sorted(index.values())
    if ids != list(range(1, len(ids) + 1)):
        raise ConfigError(f"{path}: the ids must run 1, 2, 3 … without gaps or repeats (0 is padding)")
    words = sorted(index, key=index.__getitem__)
    return _by_position(["", *words], path, tokenizer)


def _by_position(words: list[Any], path: Path, tokenizer: str) -> Vocabulary:
    """Words whose position is their id: 0 padding, 1 the OOV token, the rest real words."""
    if len(words) < 3 or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"{path}: a vocabulary needs padding, an out-of-vocabulary token and at least one word, all strings")
    real = words[2:]
    vocab = Vocabulary(real, tokenizer)
    if len(vocab) != len(words) or PAD_TOKEN in real or UNK_TOKEN in real:
        raise ConfigError(f"{path}: a word appears twice (or a word is {PAD_TOKEN!r} / {UNK_TOKEN!r}), so ids would shift")
    return vocab
