"""A Korean evaluation set shipped with the package: 20,000 star-rated reviews from NSMC.

The Naver Sentiment Movie Corpus (Lucy Park, 2016, https://github.com/e9t/nsmc) is CC0 1.0. Its raw
folder keeps each review's 1-10 rating; ``tools/build_nsmc_sample.py`` drew 4,000 reviews per paired
rating (1-2 … 9-10) from it into ``data/nsmc_ko_5class.jsonl.gz`` (1 MB), so a Korean team can train
and compare against the baseline offline, as the VADER ground truth lets an English one.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from importlib import resources

from sentiloop.datasets._binning import bins_for_labels
from sentiloop.datasets._records import LabelLike, Record, default_labels
from sentiloop.errors import DataError

RESOURCE = "nsmc_ko_5class.jsonl.gz"
DOMAIN = "movies"
MIDPOINT = 5.5  # ratings run 1..10; a record's score is the rating centred on zero (-4.5..+4.5)
# Edges on the centred rating, by number of labels: 5 classes pair the ratings (1-2, 3-4, 5-6, 7-8, 9-10);
# 3 classes are 1-3, 4-7, 8-10.
EDGES: dict[int, tuple[float, ...]] = {5: (-3.0, -1.0, 1.0, 3.0), 3: (-2.0, 2.0)}


def load_nsmc_korean(labels: Sequence[LabelLike] | None = None) -> list[Record]:
    """The bundled NSMC sample labelled for ``labels`` (5 or 3 labels by polarity), in file order."""
    labels = default_labels() if labels is None else list(labels)
    if len(labels) not in EDGES:
        raise DataError(f"the NSMC sample has a binning for 5 or 3 labels, not {len(labels)}; "
                        "train on your own labelled file with --data instead")
    bins = bins_for_labels(labels, EDGES[len(labels)])
    raw = resources.files("sentiloop.datasets").joinpath("data", RESOURCE).read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines() if line]
    return [Record(id=row["id"], text=row["text"], label=bins.label_of(row["rating"] - MIDPOINT), domain=DOMAIN,
                   score=float(row["rating"])) for row in rows]
