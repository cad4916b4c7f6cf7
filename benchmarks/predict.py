"""Prediction cost: the BERT member alone vs the whole ensemble, on the same test texts, in one run.

Measures throughput (texts/s at batch 64) and single-text latency (p50/p99) for both, and prints
their ratio. Target: ensemble throughput >= 0.8 x BERT alone (the other three members are cheap).
Needs a trained champion: `sentiloop train` first (the fast profile is enough for timing).

    .venv/bin/python benchmarks/predict.py [--texts 2000] [--single 200] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sentiloop.config import load_settings
from sentiloop.models.ensemble import Ensemble
from sentiloop.models.store import ModelStore
from sentiloop.training import load_split

RESULTS = Path(__file__).parent / "results" / "predict.json"


def throughput(predict: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], batch: int) -> float:
    predict(texts[:batch])  # warm-up: lazy initialisation is not what we measure
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        predict(texts[start : start + batch])
    return len(texts) / (time.perf_counter() - started)


def latencies_ms(predict: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
    predict(texts[:1])
    out = []
    for text in texts:
        started = time.perf_counter()
        predict([text])
        out.append((time.perf_counter() - started) * 1000)
    return np.array(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="sentiloop config (data_dir with a trained champion)")
    parser.add_argument("--texts", type=int, default=2000, help="test texts for the throughput run")
    parser.add_argument("--single", type=int, default=200, help="texts for the single-text latency run")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    settings = load_settings(args.config)
    import torch

    torch.set_num_threads(settings.models.threads)
    ensemble = Ensemble.load(ModelStore(settings.data_dir).champion_path())
    if "bert" not in ensemble.members:
        parser.error("the champion has no BERT member; train one with `sentiloop train`")
    texts = [r.text for r in load_split(settings).test][: args.texts]
    bert = ensemble.members["bert"]
    candidates = {"bert_alone": bert.predict_proba, "ensemble": ensemble.predict_proba}
    rows = {}
    for name, predict in candidates.items():
        tps = throughput(predict, texts, args.batch)
        lat = latencies_ms(predict, texts[: args.single])
        rows[name] = {"texts_per_s": tps, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}
    ratio = rows["ensemble"]["texts_per_s"] / rows["bert_alone"]["texts_per_s"]
    print(f"{'model':<12}{'texts/s (batch ' + str(args.batch) + ')':>22}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in rows.items():
        print(f"{name:<12}{row['texts_per_s']:>22.1f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}")
    print(f"ensemble / BERT throughput ratio: {ratio:.3f} (target >= 0.8) -> {'PASS' if ratio >= 0.8 else 'FAIL'}")
    result = {
        "texts": len(texts), "batch": args.batch, "members": list(ensemble.members), "rows": rows, "ratio": ratio,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
