"""Rebuild ``sentiloop/datasets/data/nsmc_ko_5class.jsonl.gz`` from the Naver Sentiment Movie Corpus.

NSMC (Lucy Park, 2016, https://github.com/e9t/nsmc, CC0 1.0) keeps, in its ``raw/`` folder, the
original 1-10 rating of ~712k Korean movie reviews (one JSON file per movie). Its well-known
``ratings_*.txt`` files are binary; the raw ratings are what a 5-class sample needs. This script keeps
reviews that contain Hangul, are at least ``--min-chars`` long and are not duplicates, pairs the ratings
1-2 ... 9-10 into five classes, and draws ``--per-class`` reviews from each (seeded), so every class is
equally frequent. Authors' (masked) names are dropped. Run it on a checkout of the corpus:

    git clone https://github.com/e9t/nsmc && python tools/build_nsmc_sample.py nsmc/raw
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

HANGUL = re.compile(r"[\uac00-\ud7a3]")
OUT = Path(__file__).resolve().parent.parent / "sentiloop" / "datasets" / "data" / "nsmc_ko_5class.jsonl.gz"


def rating_class(rating: int) -> int:
    """1-2 → 0 (very negative) … 9-10 → 4 (very positive)."""
    return (rating - 1) // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="the corpus's raw/ folder (one <movie_id>.json per movie)")
    parser.add_argument("--per-class", type=int, default=4000, help="reviews per class (default: 4000)")
    parser.add_argument("--min-chars", type=int, default=5, help="shortest review kept, in characters (default: 5)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    seen: set[str] = set()
    by_class: list[list[dict[str, object]]] = [[] for _ in range(5)]
    for path in sorted(args.raw.glob("*.json"), key=lambda p: int(p.stem)):
        for review in json.loads(path.read_text(encoding="utf-8")):
            text = " ".join(str(review["review"]).split())
            if len(text) < args.min_chars or not HANGUL.search(text) or text in seen:
                continue
            seen.add(text)
            rating = int(review["rating"])
            by_class[rating_class(rating)].append({"id": f"nsmc-{review['review_id']}", "text": text, "rating": rating,
                                                   "movie_id": str(review["movie_id"])})
    rng = random.Random(args.seed)
    rows = [row for pool in by_class for row in rng.sample(pool, args.per_class)]
    rng.shuffle(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as out:  # mtime 0: the same input gives the same bytes
        out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    print(f"{len(rows)} reviews ({args.per_class} per class, from {sum(map(len, by_class))} eligible) → {args.out}")


if __name__ == "__main__":
    main()
