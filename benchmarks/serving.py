"""Serving benchmark: POST /v1/predict latency and throughput at a steady request rate, in one run
(a) with the daemon idle and (b) while it ingests --ingest-rate events/s and a retrain runs.

The daemon is the real one (in this process, as `sentiloop demo` runs it: embedded broker, its HTTP
server on 127.0.0.1); the champion is the demo's (fast profile, trained on movie snippets if the
benchmark's data_dir has none). Requests are open-loop: sent on a fixed schedule from a small pool,
so a slow answer does not slow the offered load down. Target: p99(b) <= 3 x p99(a).

Run from the repository root:  .venv/bin/python benchmarks/serving.py [--rate 20] [--seconds 30] ...
Prints a table and writes JSON (default benchmarks/results/serving.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS_DIR, machine_info, write_json
from sentiloop.config import load_settings
from sentiloop.daemon.client import call

RESULTS = RESULTS_DIR / "serving.json"
TARGET_RATIO = 3.0
TEXTS = ["What a wonderful film", "A waste of money", "it was fine I guess", "the plot made no sense at all",
         "best thing I have seen this year", "terrible acting, boring story"]


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def steady_requests(url: str, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send rate req/s for seconds (open loop); latency of each answer, failures counted."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        status, _ = call(url, token, "POST", "/v1/predict", {"text": TEXTS[i % len(TEXTS)]}, timeout=30)
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            (latencies if status == 200 else failures).append(elapsed if status == 200 else status)

    total = int(rate * seconds)
    begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        for i in range(total):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    wall = time.perf_counter() - begin
    return {"requests": total, "ok": len(latencies), "failed": len(failures), "seconds": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 2), "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "max_ms": round(max(latencies, default=float("nan")), 1)}


def ingest(demo: Any, rate: float, stop: threading.Event) -> int:
    """Labelled feedback at a steady rate into the daemon's topic (fresh event ids each time)."""
    from sentiloop.consumers.clients import make_producer
    from sentiloop.scenario import feedback_event

    producer = make_producer(demo.settings.kafka, [demo.daemon.broker.bootstrap], linger_ms=5)
    records = [r for _, part in demo.plan.stream for r in part]
    names = demo.settings.label_names
    sent, begin = 0, time.perf_counter()
    try:
        while not stop.is_set():
            delay = begin + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            record = records[sent % len(records)]
            producer.send(demo.settings.kafka.topic, json.dumps(feedback_event(record, names, f"b{sent}-")).encode())
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    from sentiloop.datasets import load_vader_ground_truth
    from sentiloop.demo import Demo, demo_settings, make_plan
    from sentiloop.models.store import ModelStore
    from sentiloop.scenario import bootstrap_champion

    parser = argparse.ArgumentParser(prog="benchmarks/serving.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="predict requests per second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default %(default)s)")
    parser.add_argument("--ingest-rate", type=float, default=1000.0, help="feedback events/s during phase (b)")
    parser.add_argument("--data-dir", type=Path, default=Path("sentiloop-data") / "bench-serving")
    parser.add_argument("--datasets", type=Path, default=Path("sentiloop-data"), help="data_dir holding the VADER cache")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    members = ["word_sentiment", "lstm", "bilstm"]
    plan = make_plan(load_vader_ground_truth(args.datasets, fetch=False), 1500, 2500, 300)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    config = demo_settings(args.data_dir, members, 0)
    config["retrain"]["drift"] = {"enabled": False}  # only the benchmark's own retrain runs
    config_path = args.data_dir / "bench-config.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    settings = load_settings(config_path)
    if ModelStore(args.data_dir).champion() is None:
        print("training the champion (fast profile) …", flush=True)
        bootstrap_champion(settings, plan.champion, "fast", args.data_dir / "movies.jsonl")
    demo = Demo(settings, config_path, plan, rate=args.ingest_rate, interactive=False)
    demo.start_daemon()
    try:
        from sentiloop.daemon.auth import configured_token

        url, token = demo.daemon.admin_url, configured_token(settings)
        assert url and token
        steady_requests(url, token, args.rate, 3)  # warm-up: first calls load lazily
        print(f"(a) idle: {args.rate:g} req/s for {args.seconds:g}s …", flush=True)
        idle = steady_requests(url, token, args.rate, args.seconds)
        stop = threading.Event()
        sent: list[int] = []
        feeder = threading.Thread(target=lambda: sent.append(ingest(demo, args.ingest_rate, stop)))
        feeder.start()
        time.sleep(3)  # new labelled events for the retrain to learn from
        status, answer = call(url, token, "POST", "/v1/retrain", {"reason": "serving benchmark", "force": True})
        print(f"retrain requested: {status} {answer.get('policy')}", flush=True)
        while demo.daemon.controller.worker is None:
            time.sleep(0.2)
        print(f"(b) ingesting {args.ingest_rate:g} ev/s with a retrain running: {args.rate:g} req/s for {args.seconds:g}s …", flush=True)
        busy = steady_requests(url, token, args.rate, args.seconds)
        retrain_running_at_end = demo.daemon.controller.worker is not None
        stop.set()
        feeder.join()
    finally:
        demo.stop()
    ratio = busy["p99_ms"] / idle["p99_ms"]
    results = {"benchmark": "serving", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
               "args": {k: str(v) for k, v in vars(args).items()}, "members": members, "idle": idle, "busy": busy,
               "ingested": sent[0] if sent else 0, "retrain_running_through_phase_b": retrain_running_at_end,
               "p99_ratio": round(ratio, 2), "target": {"p99_ratio_max": TARGET_RATIO, "met": ratio <= TARGET_RATIO}}
    print(f"\n{'phase':<44}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'failed':>8}")
    for name, row in (("(a) idle", idle), (f"(b) ingest {args.ingest_rate:g} ev/s + retrain", busy)):
        print(f"{name:<44}{row['throughput_rps']:>8.1f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['max_ms']:>9.1f}{row['failed']:>8}")
    print(f"p99 (b) / p99 (a) = {ratio:.2f}  (target <= {TARGET_RATIO:g}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}); "
          f"retrain still running at the end of (b): {retrain_running_at_end}")
    write_json(args.out, results)
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
