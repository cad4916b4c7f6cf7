"""Parse the VADER ground-truth tarball (``hutto_ICWSM_2014.tar.gz``) into scored sentences.

Each ``*_GroundTruth.txt`` line is ``ID<TAB>MEAN-RATING<TAB>TEXT`` (CRLF endings, mean of >= 20
human ratings on -4..+4). The parser never raises on a single bad line: it skips it and says which
line and why, so a damaged copy is visible instead of silently shrinking the dataset.
"""

from __future__ import annotations

import io
import math
import tarfile
from dataclasses import dataclass, field

from sentiloop.errors import DataError

# Domain name -> file inside the tarball (matched by base name, whatever the directory).
DOMAIN_FILES: dict[str, str] = {
    "tweets": "tweets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
SCORE_RANGE = 4.0


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    """One ground-truth line; ``id`` is ``<domain>/<source id>`` so ids are unique across domains."""

    id: str
    domain: str
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class SkippedLine:
    file: str
    line: int
    reason: str


@dataclass
class ParsedGroundTruth:
    sentences: list[ScoredSentence] = field(default_factory=list)
    skipped: list[SkippedLine] = field(default_factory=list)
    recoded: list[str] = field(default_factory=list)  # "file:line" decoded as cp1252/latin-1, not UTF-8


def _decode(raw: bytes) -> tuple[str, bool]:
    """UTF-8 if possible, else cp1252 (the usual culprit in 2013 text files), else latin-1."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def parse_ground_truth_file(raw: bytes, domain: str, file_name: str, result: ParsedGroundTruth) -> None:
    """Append one domain file's sentences (and skipped lines) to ``result``."""
    seen: set[str] = set()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        line_bytes = raw_line.rstrip(b"\r")
        if not line_bytes.strip():
            continue
        line, recoded = _decode(line_bytes)
        if recoded:
            result.recoded.append(f"{file_name}:{number}")

        def skip(reason: str, number: int = number) -> None:
            result.skipped.append(SkippedLine(file_name, number, reason))

        fields = line.split("\t")
        if len(fields) < 3:
            skip(f"expected ID<TAB>SCORE<TAB>TEXT, found {len(fields)} field(s)")
            continue
        source_id, score_text = fields[0].strip(), fields[1].strip()
        text = "\t".join(fields[2:]).strip()
        try:
            score = float(score_text)
        except ValueError:
            skip(f"score {score_text[:40]!r} is not a number")
            continue
        if not math.isfinite(score) or abs(score) > SCORE_RANGE:
            skip(f"score {score_text!r} is outside -4..+4")
            continue
        if not source_id:
            skip("empty id")
            continue
        if not text:
            skip("empty text")
            continue
        if source_id in seen:
            skip(f"duplicate id {source_id!r}")
            continue
        seen.add(source_id)
        result.sentences.append(ScoredSentence(f"{domain}/{source_id}", domain, score, text))


def parse_ground_truth_tarball(data: bytes) -> ParsedGroundTruth:
    """Parse all four domain files from the inner tarball's bytes (nothing is written to disk)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            members = {m.name.rsplit("/", 1)[-1]: m for m in archive.getmembers() if m.isfile()}
            result = ParsedGroundTruth()
            for domain, file_name in DOMAIN_FILES.items():
                member = members.get(file_name)
                if member is None:
                    raise DataError(f"the VADER ground-truth tarball has no {file_name}")
                handle = archive.extractfile(member)
                if handle is None:
                    raise DataError(f"cannot read {member.name} from the VADER ground-truth tarball")
                parse_ground_truth_file(handle.read(), domain, file_name, result)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"the VADER ground-truth tarball is not a readable tar.gz: {exc}") from None
    return result
