"""Datasets: the VADER human-rated ground truth, users' labelled files, and the shared split.

Everything is returned as :class:`Record` (id, text, label index, domain, optional score). The
modules are private; this package is the public surface.

Data attribution: the VADER ground truth is by C.J. Hutto and E. Gilbert (ICWSM 2014), MIT licence,
taken from the ``vadersentiment==3.3.2`` source distribution. The Korean sample is drawn from the Naver
Sentiment Movie Corpus by Lucy Park (2016), CC0 1.0, shipped in this package.
"""

from sentiloop.datasets._binning import DEFAULT_EDGES, ScoreBins, bins_for_labels
from sentiloop.datasets._labelled import load_labelled_file
from sentiloop.datasets._nsmc import load_nsmc_korean
from sentiloop.datasets._records import LabelLike, Record
from sentiloop.datasets._split import DEFAULT_RATIOS, DEFAULT_SEED, Split, split_dataset
from sentiloop.datasets._vader import (
    DOMAINS as VADER_DOMAINS,
)
from sentiloop.datasets._vader import (
    fetch_vader_ground_truth,
    load_vader_ground_truth,
    vader_cache_dir,
)
from sentiloop.datasets._vader_parse import parse_ground_truth_tarball
from sentiloop.datasets._vader_source import ENV_SDIST as VADER_SDIST_ENV

__all__ = [
    "DEFAULT_EDGES",
    "DEFAULT_RATIOS",
    "DEFAULT_SEED",
    "VADER_DOMAINS",
    "VADER_SDIST_ENV",
    "LabelLike",
    "Record",
    "ScoreBins",
    "Split",
    "bins_for_labels",
    "fetch_vader_ground_truth",
    "load_labelled_file",
    "load_nsmc_korean",
    "load_vader_ground_truth",
    "parse_ground_truth_tarball",
    "split_dataset",
    "vader_cache_dir",
]
