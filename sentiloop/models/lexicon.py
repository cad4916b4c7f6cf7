"""Seed lexicons for bootstrapping the dictionary from what installed packages ship (no download)."""

from __future__ import annotations

from importlib import resources

from sentiloop.errors import ConfigError

VADER_RANGE = 4.0  # VADER valences are means of human ratings on -4..+4.


def vader_lexicon(max_polarity: float) -> dict[str, float]:
    """VADER's lexicon (from the vadersentiment wheel), scaled from ±4 to ±``max_polarity``."""
    text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    lexicon: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2:
            lexicon[parts[0].lower()] = float(parts[1]) / VADER_RANGE * max_polarity
    return lexicon


def load_seed_lexicon(name: str, polarities: list[float]) -> dict[str, float]:
    """The configured seed lexicon, scaled to this label set's polarity range."""
    if name == "none":
        return {}
    if name == "vader":
        return vader_lexicon(max(abs(p) for p in polarities))
    raise ConfigError(f"unknown seed lexicon {name!r}; use 'none' or 'vader'")
