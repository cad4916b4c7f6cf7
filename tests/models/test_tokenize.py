import pytest

from sentiloop.errors import ConfigError
from sentiloop.models.tokenize import get_tokenizer, kiwi_tokenize, regex_tokenize


def test_english_words_emoticons_and_negation() -> None:
    assert regex_tokenize("I don't LOVE it :) !!!") == ["i", "don't", "love", "it", ":)", "!"]


def test_korean_particles_are_split_off() -> None:
    tokens = regex_tokenize("영화가 좋다. 영화는 최고, 배우를 사랑해")
    assert tokens.count("영화") == 2
    assert "배우" in tokens and "최고" in tokens


def test_mixed_language_text() -> None:
    assert regex_tokenize("BTS 노래가 great") == ["bts", "노래", "great"]


def test_kiwi_tokenizer_gives_morphemes() -> None:
    pytest.importorskip("kiwipiepy")
    tokens = kiwi_tokenize("이 영화는 정말 재미있어요")
    assert "영화" in tokens and "재미있다" in tokens


def test_unknown_tokenizer_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown tokenizer 'x'"):
        get_tokenizer("x")
