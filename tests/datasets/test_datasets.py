"""sentiloop.datasets: VADER ground-truth parsing/caching, score bins, the shared split, user files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from sentiloop.config import DEFAULT_LABELS, Label
from sentiloop.datasets import (
    DEFAULT_EDGES,
    Record,
    Split,
    _vader,
    _vader_source,
    bins_for_labels,
    fetch_vader_ground_truth,
    load_labelled_file,
    load_nsmc_korean,
    load_vader_ground_truth,
    parse_ground_truth_tarball,
    split_dataset,
    vader_cache_dir,
)
from sentiloop.errors import ConfigError, DataError

THREE = [Label(name="negative", polarity=-1), Label(name="neutral", polarity=0), Label(name="positive", polarity=1)]

# --------------------------------------------------------------------------- a hand-made tarball

# Same layout as the real hutto_ICWSM_2014.tar.gz: ID<TAB>MEAN<TAB>TEXT, CRLF, one folder.
TINY_FILES: dict[str, bytes] = {
    "tweets_GroundTruth.txt": b"1\t2.726315789\tSo lucky &amp; happy.\r\n2\t-0.5\tMeh.\r\n3\t0.0\tExecute like lightning",
    "movieReviewSnippets_GroundTruth.txt": (
        b"1\t2.26666666667\tThe Rock is ''Conan''.\r\n"
        + "2\t-2\tWe\u2019ve seen it.\r\n".encode()  # UTF-8 curly quote
        + b"3\t-3.1\tcaf\xe9 au lait was awful\r\n"  # cp1252 byte, not UTF-8
        + b"\r\n"  # blank line: ignored
        + b"4\tnot-a-number\tbroken score\r\n"
        + b"5\t0.5\r\n"  # no text field
        + b"6\t9.5\tout of range\r\n"
        + b"2\t1.0\tduplicate id\r\n"
        + b"7\t0.25\t   \r\n"  # empty text
    ),
    "amazonReviewSnippets_GroundTruth.txt": b"\xef\xbb\xbf1_1\t-0.9\ttroubleshooting\r\n1_2\t2\tgreat\textra\r\n",
    "nytEditorialSnippets_GroundTruth.txt": b"1_1\t0.4\tOn Dec. 19, around noon.\r\n1_2\t-2.0001\tgrim\r\n",
}
TINY_COUNTS = {"tweets": 3, "movies": 3, "amazon": 2, "nyt": 2}


def _targz(files: dict[str, bytes]) -> bytes:
    """A reproducible .tar.gz: gzip's header mtime is pinned, so two builds have the same sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def _tiny_inner(files: dict[str, bytes] = TINY_FILES) -> bytes:
    return _targz({f"hutto_ICWSM_2014/{name}": data for name, data in files.items()})


def _tiny_sdist(inner: bytes) -> bytes:
    return _targz(
        {
            "vaderSentiment-3.3.2/setup.py": b"# not used\n",
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner,
        }
    )


def test_parse_tiny_tarball() -> None:
    parsed = parse_ground_truth_tarball(_tiny_inner())
    by_id = {s.id: s for s in parsed.sentences}
    assert Counter(s.domain for s in parsed.sentences) == TINY_COUNTS
    assert by_id["tweets/1"].score == pytest.approx(2.726315789)
    assert by_id["tweets/1"].text == "So lucky &amp; happy."  # kept as in the source
    assert by_id["tweets/3"].text == "Execute like lightning"  # last line without CRLF
    assert by_id["movies/1"].text == "The Rock is ''Conan''."
    assert by_id["movies/2"].text == "We\u2019ve seen it."
    assert by_id["movies/3"].text == "caf\u00e9 au lait was awful"
    assert by_id["amazon/1_1"].text == "troubleshooting"  # BOM stripped from the id
    assert by_id["amazon/1_2"].text == "great\textra"
    skipped = {(s.file, s.line): s.reason for s in parsed.skipped}
    movies = "movieReviewSnippets_GroundTruth.txt"
    assert set(skipped) == {(movies, 5), (movies, 6), (movies, 7), (movies, 8), (movies, 9)}
    assert "not a number" in skipped[(movies, 5)]
    assert "found 2 field" in skipped[(movies, 6)]
    assert "outside -4..+4" in skipped[(movies, 7)]
    assert "duplicate id '2'" in skipped[(movies, 8)]
    assert "empty text" in skipped[(movies, 9)]
    assert parsed.recoded == [f"{movies}:3"]


def test_parse_tarball_missing_domain_file_or_not_a_tarball() -> None:
    files = dict(TINY_FILES)
    del files["nytEditorialSnippets_GroundTruth.txt"]
    with pytest.raises(DataError, match="nytEditorialSnippets_GroundTruth.txt"):
        parse_ground_truth_tarball(_tiny_inner(files))
    with pytest.raises(DataError, match="not a readable tar.gz"):
        parse_ground_truth_tarball(b"definitely not gzip")


# --------------------------------------------------------------------------- fetch + cache, offline


@pytest.fixture
def tiny_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hand-made sdist whose hashes the module is told to expect; pip must never run."""
    inner = _tiny_inner()
    sdist = _tiny_sdist(inner)
    monkeypatch.setattr(_vader_source, "SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    monkeypatch.setattr(_vader_source, "INNER_SHA256", hashlib.sha256(inner).hexdigest())
    monkeypatch.setattr(_vader, "EXPECTED_DOMAIN_COUNTS", TINY_COUNTS)
    monkeypatch.delenv(_vader_source.ENV_SDIST, raising=False)

    def no_pip(dest: Path) -> Path:
        raise AssertionError("pip must not run")

    monkeypatch.setattr(_vader_source, "pip_download", no_pip)
    path = tmp_path / "incoming" / _vader_source.SDIST_NAME
    path.parent.mkdir()
    path.write_bytes(sdist)
    return path


def test_fetch_from_local_sdist_then_cache_only(tiny_sdist: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manifest = fetch_vader_ground_truth(data_dir, sdist=tiny_sdist)
    assert manifest["sentences"] == 10 and manifest["domains"] == TINY_COUNTS
    assert manifest["licence"] == "MIT" and len(manifest["skipped"]) == 5
    cache = vader_cache_dir(data_dir)
    assert (cache / "sentences.jsonl").is_file() and (cache / "manifest.json").is_file()
    assert (cache / _vader_source.SDIST_NAME).read_bytes() == tiny_sdist.read_bytes()  # kept for rebuilds

    tiny_sdist.unlink()  # second call: neither the path nor pip is needed
    records = load_vader_ground_truth(data_dir)
    assert len(records) == 10
    by_id = {r.id: r for r in records}
    assert by_id["tweets/1"].label == 4 and by_id["tweets/2"].label == 1 and by_id["movies/2"].label == 0
    assert by_id["nyt/1_2"] == Record("nyt/1_2", "grim", 0, "nyt", -2.0001)
    three = load_vader_ground_truth(data_dir, THREE, domains=["tweets"])
    assert [r.label for r in three] == [2, 0, 1]


def test_fetch_from_env_var_and_inner_tarball(tiny_sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_vader_source.ENV_SDIST, str(tiny_sdist.parent))  # a pip download folder works too
    assert fetch_vader_ground_truth(tmp_path / "a")["origin"] == str(tiny_sdist.parent)
    monkeypatch.delenv(_vader_source.ENV_SDIST)
    inner = tmp_path / "hutto_ICWSM_2014.tar.gz"
    inner.write_bytes(_tiny_inner())
    assert fetch_vader_ground_truth(tmp_path / "b", sdist=inner)["sentences"] == 10


def test_tampered_cache_is_rebuilt_from_kept_sdist(tiny_sdist: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fetch_vader_ground_truth(data_dir, sdist=tiny_sdist)
    tiny_sdist.unlink()
    sentences = vader_cache_dir(data_dir) / "sentences.jsonl"
    sentences.write_text(sentences.read_text().replace("grim", "glad"))
    with pytest.raises(DataError, match="not cached"):
        load_vader_ground_truth(data_dir, fetch=False)
    records = load_vader_ground_truth(data_dir)
    assert {r.id: r.text for r in records}["nyt/1_2"] == "grim"


def test_wrong_checksum_and_missing_file(tiny_sdist: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(tiny_sdist.read_bytes() + b"\0")
    with pytest.raises(DataError, match="sha256"):
        fetch_vader_ground_truth(tmp_path / "data", sdist=bad)
    with pytest.raises(DataError, match="cannot read the VADER sdist.*SENTILOOP_VADER_SDIST"):
        fetch_vader_ground_truth(tmp_path / "data", sdist=tmp_path / "nope.tar.gz")


def test_unexpected_counts_are_an_error(tiny_sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_vader, "EXPECTED_DOMAIN_COUNTS", {**TINY_COUNTS, "nyt": 3})
    with pytest.raises(DataError, match="expected"):
        fetch_vader_ground_truth(tmp_path / "data", sdist=tiny_sdist)
    assert not (vader_cache_dir(tmp_path / "data") / "manifest.json").exists()


def test_pip_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_vader_source.ENV_SDIST, raising=False)

    def failing_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"] and ":all:" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(_vader_source.subprocess, "run", failing_run)
    with pytest.raises(DataError) as caught:
        load_vader_ground_truth(tmp_path / "data")
    message = str(caught.value)
    assert "network unreachable" in message and "`sentiloop data fetch`" in message
    assert "SENTILOOP_VADER_SDIST" in message and _vader_source.SDIST_SHA256 in message
    assert not list(vader_cache_dir(tmp_path / "data").glob(".pip-download-*"))  # temp folder cleaned up


# --------------------------------------------------------------------------- the real data set


@pytest.fixture(scope="session")
def vader_records(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    data_dir = tmp_path_factory.mktemp("vader")
    try:
        fetch_vader_ground_truth(data_dir)
    except DataError as exc:
        pytest.skip(f"VADER ground truth not fetchable here (pip cannot reach PyPI or its cache): {exc}")
    return load_vader_ground_truth(data_dir, fetch=False)


def test_real_vader_counts(vader_records: list[Record]) -> None:
    assert len(vader_records) == 23_703
    assert Counter(r.domain for r in vader_records) == {"tweets": 4200, "movies": 10605, "amazon": 3708, "nyt": 5190}
    assert [Counter(r.label for r in vader_records)[i] for i in range(5)] == [2720, 6461, 4244, 6533, 3745]
    assert len({r.id for r in vader_records}) == 23_703
    assert all(r.score is not None and -4 <= r.score <= 4 and r.text for r in vader_records)


def test_real_vader_three_classes(vader_records: list[Record]) -> None:
    bins = bins_for_labels(THREE)
    labels = Counter(bins.label_of(r.score) for r in vader_records if r.score is not None)
    assert [labels[i] for i in range(3)] == [2720 + 6461, 4244, 6533 + 3745]


def test_real_vader_split(vader_records: list[Record]) -> None:
    split = split_dataset(vader_records)
    assert split.sizes() == {"train": 18963, "validation": 2372, "test": 2368}
    for part, share in ((split.train, 0.8), (split.validation, 0.1), (split.test, 0.1)):
        for domain in ("tweets", "movies", "amazon", "nyt"):
            for label in range(5):
                total = sum(1 for r in vader_records if (r.label, r.domain) == (label, domain))
                got = sum(1 for r in part if (r.label, r.domain) == (label, domain))
                assert abs(got - share * total) <= 1


# --------------------------------------------------------------------------- score bins


def test_default_five_class_bins_edges_go_outward() -> None:
    bins = bins_for_labels()
    assert bins.edges == DEFAULT_EDGES[(2, 1, 2)]
    cases = {-4: 0, -2.0001: 0, -2: 0, -1.9999: 1, -0.5: 1, -0.4999: 2, 0: 2, 0.4999: 2, 0.5: 3, 1.9999: 3, 2: 4, 4: 4}
    assert {score: bins.label_of(score) for score in cases} == cases


def test_three_class_bins_follow_polarity_not_list_order() -> None:
    assert bins_for_labels(THREE).labels_of([-0.6, -0.5, 0, 0.49, 0.5]) == [0, 0, 1, 1, 2]
    shuffled = [THREE[2], THREE[0], THREE[1]]  # positive, negative, neutral
    assert bins_for_labels(shuffled).labels_of([-1, 0, 1]) == [1, 2, 0]
    scaled = [Label(name="neg", polarity=-3), Label(name="neu", polarity=0), Label(name="pos", polarity=3)]
    assert bins_for_labels(scaled).edges == (-0.5, 0.5)


def test_bins_for_other_label_sets() -> None:
    four = [Label(name=n, polarity=p) for n, p in (("a", -2), ("b", -1), ("c", 1), ("d", 2))]
    with pytest.raises(DataError, match="no default score binning.*pass 3 ascending edges"):
        bins_for_labels(four)
    assert bins_for_labels(four, edges=[-1, 0, 1]).labels_of([-1.5, -1, -0.5, 0, 1]) == [0, 0, 1, 2, 3]
    binary = [Label(name="neg", polarity=-1), Label(name="pos", polarity=1)]
    assert bins_for_labels(binary, edges=[0]).labels_of([-0.1, 0, 0.1]) == [0, 1, 1]
    with pytest.raises(DataError, match="strictly ascending"):
        bins_for_labels(THREE, edges=[0.5, -0.5])
    with pytest.raises(DataError, match="2 edges need 3 labels"):
        bins_for_labels(four, edges=[-1, 1])
    with pytest.raises(DataError, match="distinct"):
        bins_for_labels([Label(name="x", polarity=0), Label(name="y", polarity=0)], edges=[0])
    with pytest.raises(DataError, match="non-finite"):
        bins_for_labels().label_of(float("nan"))


# --------------------------------------------------------------------------- split


def _synthetic(n: int = 1000) -> list[Record]:
    rng = random.Random(0)
    return [Record(f"r{i:04d}", f"text {i}", rng.randrange(3), rng.choice(["a", "b"])) for i in range(n)]


def test_split_is_deterministic_whatever_the_input_order() -> None:
    records = _synthetic()
    first = split_dataset(records)
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    assert split_dataset(shuffled) == first
    assert split_dataset(iter(reversed(records))) == first
    other = split_dataset(records, seed=14)
    assert other.sizes() == first.sizes() and other.test != first.test


def test_split_is_a_stratified_partition() -> None:
    records = _synthetic()
    split = split_dataset(records, ratios=(0.7, 0.2, 0.1))
    ids = [r.id for part in (split.train, split.validation, split.test) for r in part]
    assert sorted(ids) == sorted(r.id for r in records)  # disjoint and complete
    assert all(part == sorted(part, key=lambda r: r.id) for part in (split.train, split.validation, split.test))
    for key in {(r.label, r.domain) for r in records}:
        total = sum((r.label, r.domain) == key for r in records)
        for part, share in ((split.train, 0.7), (split.validation, 0.2), (split.test, 0.1)):
            assert abs(sum((r.label, r.domain) == key for r in part) - share * total) <= 1


def test_split_small_and_bad_inputs() -> None:
    assert split_dataset([Record("only", "t", 0)]) == Split([Record("only", "t", 0)], [], [])
    assert split_dataset([]).sizes() == {"train": 0, "validation": 0, "test": 0}
    with pytest.raises(DataError, match="unique"):
        split_dataset([Record("x", "a", 0), Record("x", "b", 1)])
    with pytest.raises(ConfigError, match="summing to 1"):
        split_dataset(_synthetic(10), ratios=(0.8, 0.1))
    with pytest.raises(ConfigError, match="summing to 1"):
        split_dataset(_synthetic(10), ratios=(0.8, 0.3, -0.1))


# --------------------------------------------------------------------------- users' labelled files


def test_jsonl_three_classes(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    rows = [
        {"text": "  loved it ", "label": "positive", "domain": "app"},
        {"text": "meh", "label": 1, "id": 77},
        {"text": "awful", "label": "0", "extra": "ignored"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n", encoding="utf-8")
    records = load_labelled_file(path, THREE)
    assert records == [
        Record("feedback.jsonl:1", "loved it", 2, "app"),
        Record("77", "meh", 1, "unknown"),
        Record("feedback.jsonl:4", "awful", 0, "unknown"),
    ]
    assert load_labelled_file(path, ["negative", "neutral", "positive"], default_domain="web")[1].domain == "web"


def test_csv_and_tsv_three_classes(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(
        '\ufefftext,label,domain\n"good, really",positive,shop\n"two\nlines",neutral,\nbad,0,shop\n', encoding="utf-8"
    )
    records = load_labelled_file(path, THREE)
    assert [(r.id, r.text, r.label, r.domain) for r in records] == [
        ("data.csv:2", "good, really", 2, "shop"),
        ("data.csv:3", "two\nlines", 1, "unknown"),
        ("data.csv:5", "bad", 0, "shop"),
    ]
    tsv = tmp_path / "data.tsv"
    tsv.write_text("label\ttext\nvery_positive\tbrilliant\n4\tsuperb\n", encoding="utf-8")
    assert [r.label for r in load_labelled_file(tsv, DEFAULT_LABELS)] == [4, 4]
    other = tmp_path / "data.txt"
    other.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert len(load_labelled_file(other, THREE, format="csv")) == 3


def test_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        '{"text": "fine", "label": "positive"}',
        '{"text": "", "label": "positive"}',
        '{"text": "x", "label": "very_positive"}',
        '{"text": "x", "label": 3}',
        '{"text": "x"}',
        '{"text": "x", "label": true}',
        "{not json",
        "[1, 2]",
        '{"text": 5, "label": 0}',
        '{"text": "x", "label": 0, "domain": 12}',
        '{"text": "dup", "label": 0, "id": "a"}',
        '{"text": "dup", "label": 0, "id": "a"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_labelled_file(path, THREE)
    message = str(caught.value)
    assert message.startswith(f"{path}: 10 bad row(s)")
    for expected in (
        "line 2, field 'text': is empty",
        "line 3, field 'label': 'very_positive' is not one of negative, neutral, positive",
        "line 4, field 'label': index 3 is outside 0..2",
        "line 5, field 'label': is missing",
        "line 6, field 'label': must be a label name or index, got true",
        "line 7: is not valid JSON",
        "line 8: is a JSON list, not an object",
        "line 9, field 'text': must be a string",
        "line 10, field 'domain'",
        "line 12, field 'id': 'a' repeats line 11",
    ):
        assert expected in message
    assert "\n  line 1," not in message and "\n  line 1:" not in message


def test_bad_csv_files(tmp_path: Path) -> None:
    no_label = tmp_path / "a.csv"
    no_label.write_text("text,rating\nhi,5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"(?s)a\.csv: 1 bad row.*line 1, field 'label': header has no label column"):
        load_labelled_file(no_label, THREE)
    ragged = tmp_path / "b.csv"
    ragged.write_text("text,label\nhi,positive,extra\nok,neutral\n,negative\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"(?s)line 2: has 3 fields, the header has 2.*line 4, field 'text': is empty"):
        load_labelled_file(ragged, THREE)
    latin = tmp_path / "c.csv"
    latin.write_bytes(b"text,label\nok,neutral\ncaf\xe9,positive\n")
    with pytest.raises(DataError, match=r"c\.csv line 3: not UTF-8"):
        load_labelled_file(latin, THREE)
    empty = tmp_path / "d.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_labelled_file(empty, THREE)
    with pytest.raises(DataError, match="unknown format '.xlsx'"):
        load_labelled_file(tmp_path / "e.xlsx", THREE)
    with pytest.raises(DataError, match="cannot read"):
        load_labelled_file(tmp_path / "missing.csv", THREE)


# -- the bundled Korean sample (NSMC) -------------------------------------------------------------


def test_bundled_korean_reviews_are_balanced_and_labelled_by_paired_rating() -> None:
    records = load_nsmc_korean(DEFAULT_LABELS)
    assert len(records) == 20000 and len({r.id for r in records}) == 20000 and len({r.text for r in records}) == 20000
    assert Counter(r.label for r in records) == {c: 4000 for c in range(5)}
    by_rating = {int(r.score or 0): r.label for r in records}
    assert by_rating == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3, 8: 3, 9: 4, 10: 4}
    assert all(re.search(r"[\uac00-\ud7a3]", r.text) and r.domain == "movies" for r in records)


def test_bundled_korean_reviews_three_classes_and_other_label_sets() -> None:
    three = [Label(name="negative", polarity=-1), Label(name="neutral", polarity=0), Label(name="positive", polarity=1)]
    by_rating = {int(r.score or 0): r.label for r in load_nsmc_korean(three)}
    assert by_rating == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1, 8: 2, 9: 2, 10: 2}
    with pytest.raises(DataError, match="5 or 3 labels"):
        load_nsmc_korean(three[:2])
