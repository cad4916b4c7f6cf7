"""The VADER human-rated ground truth (Hutto & Gilbert 2014, MIT): fetch once, cache, load as Records.

The cache is ``<data_dir>/datasets/vader_gt/``: ``sentences.jsonl`` (id, domain, score, text; no
labels, so any label set can be derived) and ``manifest.json`` (sha256s of the sdist, the inner
tarball and the JSONL, counts, skipped lines). The manifest is written last, so it marks a
complete cache; a load checks the JSONL's sha256 against it and never touches pip when it matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentiloop.datasets import _vader_source as source
from sentiloop.datasets._binning import bins_for_labels
from sentiloop.datasets._records import LabelLike, Record
from sentiloop.datasets._vader_parse import DOMAIN_FILES, ScoredSentence, parse_ground_truth_tarball
from sentiloop.errors import DataError
from sentiloop.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
EXPECTED_DOMAIN_COUNTS: dict[str, int] = {"tweets": 4200, "movies": 10605, "amazon": 3708, "nyt": 5190}
DOMAINS: tuple[str, ...] = tuple(DOMAIN_FILES)
CITATION = (
    "Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment Analysis "
    "of Social Media Text. Eighth International Conference on Weblogs and Social Media (ICWSM-14)."
)


def vader_cache_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "datasets" / "vader_gt"


def _read_cache(cache: Path) -> tuple[dict[str, Any], list[ScoredSentence]] | None:
    """The cached manifest and sentences, or None (with the reason logged) if absent or not intact."""
    manifest_path, sentences_path = cache / "manifest.json", cache / "sentences.jsonl"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        data = sentences_path.read_bytes()
    except (OSError, ValueError) as exc:
        log.warning("VADER cache in %s is unreadable (%s); rebuilding", cache, exc)
        return None
    expected = {
        "format": CACHE_FORMAT,
        "sdist_sha256": source.SDIST_SHA256,
        "inner_sha256": source.INNER_SHA256,
        "sentences_sha256": hashlib.sha256(data).hexdigest(),
    }
    stale = [key for key, value in expected.items() if not isinstance(manifest, dict) or manifest.get(key) != value]
    if stale:
        log.warning("VADER cache in %s does not match its manifest (%s); rebuilding", cache, ", ".join(stale))
        return None
    try:
        sentences = [ScoredSentence(**json.loads(line)) for line in data.decode("utf-8").splitlines() if line]
    except (ValueError, TypeError) as exc:
        log.warning("VADER cache in %s cannot be parsed (%s); rebuilding", cache, exc)
        return None
    return manifest, sentences


def fetch_vader_ground_truth(
    data_dir: Path | str, *, sdist: Path | str | None = None, force: bool = False
) -> dict[str, Any]:
    """Make sure the parsed ground truth is cached under ``data_dir``; return its manifest.

    A valid cache is reused (no pip) unless ``force``. ``sdist`` (or ``$SENTILOOP_VADER_SDIST``) is a
    local ``vaderSentiment-3.3.2.tar.gz`` for machines that cannot reach PyPI. Raises DataError with
    what to do when the download, a checksum or the parse fails.
    """
    cache = vader_cache_dir(data_dir)
    if not force:
        cached = _read_cache(cache)
        if cached is not None:
            return cached[0]
    started = time.monotonic()
    inner, origin = source.obtain_inner_tarball(cache, sdist)
    parsed = parse_ground_truth_tarball(inner)
    for skipped in parsed.skipped:
        log.warning("VADER ground truth: skipped %s line %d: %s", skipped.file, skipped.line, skipped.reason)
    counts = Counter(sentence.domain for sentence in parsed.sentences)
    if dict(counts) != EXPECTED_DOMAIN_COUNTS:
        raise DataError(
            f"the VADER ground truth parsed into {dict(counts)} sentences per domain, expected "
            f"{EXPECTED_DOMAIN_COUNTS} ({len(parsed.skipped)} line(s) skipped)"
        )
    payload = "".join(
        json.dumps({"id": s.id, "domain": s.domain, "score": s.score, "text": s.text}, ensure_ascii=False) + "\n"
        for s in parsed.sentences
    ).encode("utf-8")
    manifest = {
        "format": CACHE_FORMAT,
        "dataset": "VADER human-rated ground truth (hutto_ICWSM_2014)",
        "licence": "MIT",
        "citation": CITATION,
        "source": f"{source.VADER_REQUIREMENT} sdist, {source.INNER_PATH}",
        "origin": origin,
        "sdist_sha256": source.SDIST_SHA256,
        "inner_sha256": source.INNER_SHA256,
        "sentences_sha256": hashlib.sha256(payload).hexdigest(),
        "sentences": len(parsed.sentences),
        "domains": {domain: counts[domain] for domain in DOMAINS},
        "skipped": [{"file": s.file, "line": s.line, "reason": s.reason} for s in parsed.skipped],
        "recoded_lines": parsed.recoded,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fetch_seconds": round(time.monotonic() - started, 3),
    }
    atomic_write_bytes(cache / "sentences.jsonl", payload)
    atomic_write_json(cache / "manifest.json", manifest)  # last: marks the cache complete
    log.info("VADER ground truth cached in %s (%d sentences)", cache, len(parsed.sentences))
    return manifest


def load_vader_ground_truth(
    data_dir: Path | str,
    labels: Sequence[LabelLike] | None = None,
    *,
    edges: Sequence[float] | None = None,
    domains: Iterable[str] | None = None,
    sdist: Path | str | None = None,
    fetch: bool = True,
) -> list[Record]:
    """The ground truth as Records labelled for ``labels`` (default: the 5-class set), in file order.

    Labels come from the mean score via :func:`bins_for_labels` (``edges`` overrides the default
    bins). With ``fetch=False`` a missing cache is an error instead of a download.
    """
    bins = bins_for_labels(labels, edges)
    wanted = set(DOMAINS if domains is None else domains)
    unknown = wanted - set(DOMAINS)
    if unknown:
        raise DataError(f"unknown VADER domain(s) {sorted(unknown)}; known: {', '.join(DOMAINS)}")
    cache = vader_cache_dir(data_dir)
    cached = _read_cache(cache)
    if cached is None:
        if not fetch:
            raise DataError(f"the VADER ground truth is not cached in {cache}; run `sentiloop data fetch`")
        fetch_vader_ground_truth(data_dir, sdist=sdist, force=True)
        cached = _read_cache(cache)
        if cached is None:
            raise DataError(f"the VADER ground truth cache in {cache} could not be read back after writing it")
    return [
        Record(id=s.id, text=s.text, label=bins.label_of(s.score), domain=s.domain, score=s.score)
        for s in cached[1]
        if s.domain in wanted
    ]
