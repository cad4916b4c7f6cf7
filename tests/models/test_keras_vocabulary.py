"""Vocabularies of teams' Keras models, read id for id from the files Keras tools write (no TensorFlow needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiloop.errors import ConfigError
from sentiloop.models.keras_vocabulary import read_vocabulary
from sentiloop.models.vocab import PAD, UNK, Vocabulary


def write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_a_keras_tokenizer_file_keeps_its_ids(tmp_path: Path) -> None:
    index = {"<OOV>": 1, "good": 2, "film": 3}
    path = write(tmp_path / "tokenizer.json", {"class_name": "Tokenizer", "config": {"oov_token": "<OOV>", "word_index": json.dumps(index)}})
    vocab = read_vocabulary(path, "regex")
    assert vocab.itos == ["<pad>", "<unk>", "good", "film"]
    assert vocab.ids(["good film, unseen"], 8) == [[2, 3, UNK]]


def test_a_word_index_object_and_a_text_vectorization_list_and_a_text_file(tmp_path: Path) -> None:
    by_id = read_vocabulary(write(tmp_path / "index.json", {"[UNK]": 1, "bad": 2, "plot": 3}), "regex")
    by_list = read_vocabulary(write(tmp_path / "list.json", ["", "[UNK]", "bad", "plot"]), "regex")
    by_lines = read_vocabulary(write(tmp_path / "vocab.txt", "\n[UNK]\nbad\nplot\n"), "regex")
    assert by_id.itos == by_list.itos == by_lines.itos == ["<pad>", "<unk>", "bad", "plot"]
    own = read_vocabulary(write(tmp_path / "own.json", Vocabulary(["bad", "plot"]).to_dict()), "regex")
    assert own.itos == by_id.itos and own.stoi["plot"] == 3 and PAD == 0


@pytest.mark.parametrize(("content", "reason"), [
    ({"class_name": "Tokenizer", "config": {"oov_token": None, "word_index": json.dumps({"the": 1, "film": 2})}}, "oov_token.*'the'"),
    ({"<OOV>": 1, "good": 3}, "without gaps"),
    ({"<OOV>": 1, "good": "2"}, "must be an integer"),
    (["", "[UNK]", "good", "good"], "appears twice"),
    (["", "[UNK]"], "at least one word"),
    (42, "expected a word"),
])
def test_a_vocabulary_whose_ids_cannot_be_kept_is_refused(tmp_path: Path, content: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        read_vocabulary(write(tmp_path / "v.json", content), "regex")


def test_a_file_that_is_not_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        read_vocabulary(write(tmp_path / "v.json", "{nope"), "regex")
