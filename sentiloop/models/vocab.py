"""Word vocabulary of the recurrent members: token → id, built from training texts, stored as JSON.

Id 0 is padding (its embedding stays zero) and id 1 stands for every word outside the vocabulary.
The vocabulary remembers which tokenizer built it, so a loaded member splits text exactly the way it
was trained, whatever the current configuration says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from sentiloop.errors import CheckpointError
from sentiloop.models.tokenize import Tokenizer, get_tokenizer

if TYPE_CHECKING:
    from sentiloop.config import RecurrentConfig

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
FORMAT = "sentiloop.vocab/1"


class Vocabulary:
    """An ordered word list; a word's position is its id."""

    def __init__(self, words: Iterable[str], tokenizer: str = "regex") -> None:
        self.tokenizer_name = tokenizer
        self.tokenize: Tokenizer = get_tokenizer(tokenizer)
        self.itos: list[str] = [PAD_TOKEN, UNK_TOKEN]
        self.stoi: dict[str, int] = {PAD_TOKEN: PAD, UNK_TOKEN: UNK}
        for word in words:
            if word not in self.stoi:
                self.stoi[word] = len(self.itos)
                self.itos.append(word)

    @classmethod
    def build(cls, texts: Iterable[str], tokenizer: str = "regex", min_freq: int = 2, max_vocab: int = 30_000) -> Vocabulary:
        """The ``max_vocab`` most frequent words seen at least ``min_freq`` times (ties: first seen)."""
        tokenize = get_tokenizer(tokenizer)
        counts = Counter(word for text in texts for word in tokenize(text))
        ranked = sorted(counts.items(), key=lambda item: -item[1])  # stable: ties keep first-seen order
        words = [word for word, n in ranked if n >= min_freq][: max(0, max_vocab - 2)]
        return cls(words, tokenizer)

    def merged(self, other: Vocabulary, max_vocab: int) -> Vocabulary:
        """This vocabulary's words, then ``other``'s new ones, capped at ``max_vocab`` ids."""
        extra = [word for word in other.words() if word not in self.stoi]
        return Vocabulary((self.words() + extra)[: max(0, max_vocab - 2)], self.tokenizer_name)

    def words(self) -> list[str]:
        """The real words (without the padding and unknown markers)."""
        return self.itos[2:]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text, cut at ``max_length``; a text without tokens becomes ``[UNK]``."""
        out = []
        for text in texts:
            ids = [self.stoi.get(word, UNK) for word in self.tokenize(text)[:max_length]]
            out.append(ids or [UNK])
        return out

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids (n, longest) and lengths (n,)."""
        return pad(self.ids(texts, max_length))

    def shared_ids(self, old: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
        """(ids here, ids in ``old``) of every entry both know, the unknown-word marker included:
        the embedding rows a transfer carries over from its champion."""
        pairs = [(i, old.stoi[word]) for i, word in enumerate(self.itos) if i > PAD and word in old.stoi]
        new_ids, old_ids = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
        return new_ids, old_ids

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "tokenizer": self.tokenizer_name, "words": self.words()}

    @classmethod
    def from_dict(cls, data: Any) -> Vocabulary:
        """Rebuild from ``to_dict`` output; anything else is a CheckpointError."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"not a {FORMAT} vocabulary")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or len(set(words)) != len(words):
            raise CheckpointError("vocabulary words must be a list of distinct strings")
        try:
            return cls(words, data.get("tokenizer", "regex"))
        except ValueError as exc:
            raise CheckpointError(f"vocabulary: {exc}") from None


class VocabularyMember:
    """``HasVocabulary`` for a member that owns a :class:`Vocabulary` (the LSTM/BiLSTM in torch and in Keras)."""

    kind: ClassVar[str]
    vocab: Vocabulary | None
    config: RecurrentConfig

    @property
    def tokenizer_name(self) -> str:
        return self.vocab.tokenizer_name if self.vocab is not None else self.config.tokenizer

    def known_words(self) -> list[str]:
        return self.vocab.words() if self.vocab is not None else []

    def tokenize(self, text: str) -> list[str]:
        return self._require_vocab().tokenize(text)

    def _require_vocab(self) -> Vocabulary:
        if self.vocab is None:
            raise RuntimeError(f"the {self.kind} member has no vocabulary yet")
        return self.vocab


def pad(sequences: Sequence[Sequence[int]], side: Literal["post", "pre"] = "post", length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad id lists with PAD into one int64 array (after the ids, or before them as Keras'
    ``pad_sequences`` does by default), ``length`` wide (default: the longest); also return their lengths."""
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    width = length if length is not None else int(lengths.max()) if len(sequences) else 0
    ids = np.full((len(sequences), width), PAD, dtype=np.int64)
    for row, seq in enumerate(sequences):
        kept = list(seq)[:width]
        if side == "post":
            ids[row, : len(kept)] = kept
        elif kept:
            ids[row, width - len(kept):] = kept
    return ids, np.minimum(lengths, width)
