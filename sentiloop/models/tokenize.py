"""Pluggable word tokenizers shared by the dictionary and the neural members.

``regex`` (default) handles English and Korean without extra packages: lower-cased Latin words,
numbers, common emoticons, and Hangul words with their trailing particle (josa) split off so that
"영화가" and "영화는" both count as "영화". ``kiwi`` uses the Kiwi morphological analyser
(``pip install 'sentiloop[ko]'``) for proper Korean morphemes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sentiloop.errors import ConfigError

Tokenizer = Callable[[str], list[str]]

_TOKEN = re.compile(
    r"(?P<emo>[:;=8][\-o*']?[)(\]\[dDpP/\\|]|<3)"
    r"|(?P<latin>[^\W\d_\uac00-\ud7a3\u3131-\u318e]+(?:'[^\W\d_]+)?)"
    r"|(?P<num>\d+(?:[.,]\d+)?)"
    r"|(?P<hangul>[\uac00-\ud7a3\u3131-\u318e]+)"
    r"|(?P<bang>[!?]+)"
)
# Longest first, so "에서는" is stripped before "는".
_JOSA = sorted(
    ["은", "는", "이", "가", "을", "를", "에", "의", "도", "만", "로", "으로", "와", "과", "랑", "이랑", "에서", "에게", "한테", "께", "부터", "까지", "보다", "처럼", "에서는", "에는", "으로는", "로는", "이나", "나", "야", "요", "이다"],
    key=len,
    reverse=True,
)


def _strip_josa(word: str) -> str:
    if len(word) < 2:
        return word
    for particle in _JOSA:
        if word.endswith(particle) and len(word) - len(particle) >= 1:
            return word[: -len(particle)]
    return word


# The same alternation without named groups: ``findall`` then returns the matched strings from C,
# and a token's kind is told by its first character (a Hangul token is all Hangul, a bang all !?).
# About twice as fast as a match object per token; the dictionary tokenises every labelled event.
_TOKEN_TEXT = re.compile(re.sub(r"\(\?P<\w+>", "(?:", _TOKEN.pattern))
_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")


def regex_tokenize(text: str) -> list[str]:
    """Language-aware regex tokenizer: English words and Hangul words (particles stripped)."""
    tokens = _TOKEN_TEXT.findall(text)
    if text.isascii():  # no Hangul possible: lower-case all but the bangs (":D" → ":d", as in the VADER lexicon)
        return [t[0] if t[0] in "!?" else t.lower() for t in tokens]
    return [t[0] if t[0] in "!?" else _strip_josa(t) if _HANGUL.match(t) else t.lower() for t in tokens]


# Kiwi part-of-speech tags that carry sentiment: nouns, verbs, adjectives, adverbs, roots, foreign words.
_KIWI_KEEP = ("NN", "VV", "VA", "MAG", "XR", "SL", "SN", "IC")


@lru_cache(maxsize=1)
def _kiwi() -> Any:  # kiwipiepy.Kiwi, an optional dependency
    try:
        from kiwipiepy import Kiwi
    except ImportError:
        raise ImportError("the 'kiwi' tokenizer needs kiwipiepy: pip install 'sentiloop[ko]'") from None
    return Kiwi()


def kiwi_tokenize(text: str) -> list[str]:
    """Korean morphemes via Kiwi; verbs/adjectives get the dictionary form suffix '다'."""
    tokens: list[str] = []
    for token in _kiwi().tokenize(text):
        if not token.tag.startswith(_KIWI_KEEP):
            continue
        form = token.form.lower()
        tokens.append(form + "다" if token.tag in ("VV", "VA", "VV-I", "VA-I", "VV-R", "VA-R") else form)
    return tokens


TOKENIZERS: dict[str, Tokenizer] = {"regex": regex_tokenize, "kiwi": kiwi_tokenize}


def get_tokenizer(name: str) -> Tokenizer:
    """Look a tokenizer up by its config name."""
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of {sorted(TOKENIZERS)}") from None
