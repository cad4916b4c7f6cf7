"""Feedback benchmark: the drift benchmark's domain-shift stream, with labels late and partial.

Production feedback is mostly unlabelled traffic; labels come later (here ``--label-delay`` traffic
events behind their predictions) and only for a share of the events (``--label-share``). Can the
daemon see a shift before the labels do, and does its label-free accuracy estimate hold up once they
arrive? One run:

  1. bootstrap    a champion on movie sentences only (the same split as benchmarks/drift.py);
  2. calibration  drift.py's procedure (label-based thresholds with ``drift.calibrate``, label-free ones
                  with ``label_free.calibrate_label_free``): from the champion's own predictions on the
                  stable stretch, offline, before streaming (max over shuffled replicas x 1.2);
  3. stream       ``python -m sentiloop run`` on an embedded broker, one partition: the stable movie
                  stretch, then --domains in order, every event *unlabelled*; for --label-share of them
                  a label event (``ref_event_id``) follows --label-delay traffic events later.
                  Retraining is on only so that each detection is consumed (the detectors reset and can
                  fire at the next shift); its settle count is out of reach, so nothing is retrained;
  4. measure      every detection from the daemon's log (``drift signal S after N scored traffic|labelled
                  events``: N is exact, mapped to the traffic position), label-free vs label-based; the
                  CBPE estimate of each traffic chunk against the accuracy its matured labels show
                  (GET /v1/status), along the stream and in the plot.

Targets (issue 13): a label-free signal detects each shift before that shift's first label matures
(delay < --label-delay); no detection on the stable stretch; the estimate within the error reported.

Run from the repository root:  .venv/bin/python benchmarks/feedback.py [--label-delay 2000 --label-share 0.3]
Prints a table and writes JSON (default benchmarks/results/feedback.json) and a plot (feedback.png).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; inherited by the daemon (see _common.OMP_NOTE)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import argparse
import hashlib
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from tqdm import tqdm

from benchmarks._common import (
    DEFAULT_DATASETS,
    OMP_NOTE,
    RESULTS_DIR,
    bench_config,
    deep_merge,
    feedback_event,
    load_note,
    machine_info,
    plain_args,
    print_table,
    profile_overrides,
    vader_records,
    verdict,
    write_json,
)
from benchmarks.drift import DEFAULT_SEED, Block, Daemon, bootstrap_movies, calibrate_on_stable, serving_daemon, wait_for

TOPIC = "bench.feedback"
LABEL_FREE = ("prediction_shift", "confidence_drop", "oov_rate")  # need no label (OOV watches all traffic)
LABEL_BASED = ("error_rate", "label_shift")
# These two take the window they last fired on as their new reference, so after the first shift they
# measure change since the previous regime. The others measure distance from the champion's golden set
# and, with no retrain here, keep firing through every later block: they say nothing about those shifts.
RE_REFERENCED = ("prediction_shift", "label_shift")
DETECTION = re.compile(r"drift signal (\w+) after (\d+) scored (traffic|labelled) events: (.*)")
log = logging.getLogger("benchmarks.feedback")


@dataclass
class Stream:
    records: list[dict[str, Any]]  # in send order: traffic and label events
    label_positions: list[int]  # for the k-th label event: how many traffic events were sent before it
    traffic: int
    labels: int


def is_labelled(event_id: str, share: float) -> bool:
    """Which events ever get a label: a fixed share, by id hash (the same in every run)."""
    return int.from_bytes(hashlib.blake2b(f"label:{event_id}".encode(), digest_size=4).digest(), "big") % 10_000 < share * 10_000


def build_stream(blocks: Sequence[Block], label_names: list[str], delay: int, share: float) -> Stream:
    """Unlabelled traffic in block order; each chosen event's label ``delay`` traffic events after it."""
    placed: list[tuple[float, dict[str, Any]]] = []
    position = 0
    for block in blocks:
        for record in block.records:
            event = feedback_event(record, label_names)
            label = event.pop("label")
            placed.append((position, event))
            if is_labelled(event["event_id"], share):
                placed.append((position + delay + 0.5, {"event_id": f"label-{event['event_id']}", "ref_event_id": event["event_id"],
                                                        "label": label}))
            position += 1
    placed.sort(key=lambda p: p[0])
    records, label_positions, traffic = [], [], 0
    for _, record in placed:
        records.append(record)
        if "ref_event_id" in record:
            label_positions.append(traffic)
        else:
            traffic += 1
    return Stream(records, label_positions, traffic, len(label_positions))


def daemon_config(data_dir: Path, bootstrap: str, port: int, thresholds: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    overrides = deep_merge(profile_overrides(data_dir, args.members, args.profile), {
        "models": {"seed": args.seed},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": TOPIC, "group_id": "bench.feedback", "partitions": 1, "poll_timeout_ms": 200},
        "metrics": {"host": "127.0.0.1", "port": port},
        "dictionary": {"snapshot_every": 0},
        "retrain": {  # on, so detections are consumed and detectors reset; the settle count is never reached
            "enabled": True, "volume_threshold": 10**9,
            "policy": {"warmup_events": 0, "cooldown_s": 0, "hysteresis": 1, "max_retrains": 100, "drift_settle_events": 10**9},
            "drift": {key: thresholds[key] for key in ("ph_threshold", "label_threshold", "oov_margin", "prediction_threshold",
                                                       "confidence_margin")} | {"prediction_window": args.chunk, "chunks_kept": 10_000},
        },
        "log_level": "INFO",
    })
    return bench_config(data_dir, args.members, overrides)


def send(daemon: Daemon, bootstrap: str, stream: Stream, rate: float) -> list[dict[str, Any]]:
    """Paced producer; scrapes /metrics twice a second (the estimate gauge along the stream)."""
    from sentiloop.config import KafkaConfig
    from sentiloop.consumers.clients import ensure_topics, make_producer

    config = KafkaConfig(bootstrap_servers=[bootstrap], topic=TOPIC, partitions=1)
    ensure_topics(config, [bootstrap], [TOPIC])
    producer = make_producer(config, [bootstrap], linger_ms=0)
    samples: list[dict[str, Any]] = []
    started, last, traffic = time.monotonic(), 0.0, 0
    try:
        for sent, record in enumerate(tqdm(stream.records, unit="rec", desc="stream")):
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(TOPIC, value=json.dumps(record, ensure_ascii=False).encode(),
                          key=str(record.get("ref_event_id") or record["event_id"]).encode())
            traffic += "ref_event_id" not in record
            if time.monotonic() - last >= 0.5 and (m := daemon.metrics()) is not None:
                last = time.monotonic()
                samples.append({"sent_traffic": traffic, "monitored": m.get("sentiloop_monitored_events_total"),
                                "estimated": m.get("sentiloop_estimated_accuracy"),
                                **{f"stat_{s}": m.get(f'sentiloop_drift_statistic{{signal="{s}"}}') for s in (*LABEL_FREE, *LABEL_BASED)}})
        producer.flush()
    finally:
        producer.close()
    return samples


def admin_status(data_dir: Path, port: int) -> dict[str, Any]:
    from sentiloop.daemon.client import call

    token = (data_dir / "admin.token").read_text(encoding="utf-8").strip()
    status, body = call(f"http://127.0.0.1:{port}", token, "GET", "/v1/status", None, timeout=30)
    if status != 200:
        raise RuntimeError(f"GET /v1/status answered {status}: {body}")
    return body


def analyse(blocks: Sequence[Block], stream: Stream, log_text: str, chunks: list[dict[str, Any]], delay: int,
            chunk: int) -> dict[str, Any]:
    detections = []
    for m in DETECTION.finditer(log_text):
        signal, count, kind = m.group(1), int(m.group(2)), m.group(3)
        position = count if kind == "traffic" else stream.label_positions[count - 1]
        detections.append({"signal": signal, "kind": "label_free" if signal in LABEL_FREE else "label_based", "position": position,
                           "count": count, "reason": m.group(4).strip()})
    shifts = []
    for number, block in enumerate(blocks[1:]):
        row: dict[str, Any] = {"domain": block.domain, "start": block.start, "first_label_matures": block.start + delay,
                               "by_signal": {}}
        for signal in (*LABEL_FREE, *LABEL_BASED):
            hits = [d["position"] for d in detections if d["signal"] == signal and block.start <= d["position"] < block.end]
            row["by_signal"][signal] = min(hits) - block.start if hits else None
        for kind, signals in (("label_free", LABEL_FREE), ("label_based", LABEL_BASED)):
            counted = [s for s in signals if number == 0 or s in RE_REFERENCED]  # see RE_REFERENCED
            delays = [(row["by_signal"][s], s) for s in counted if row["by_signal"][s] is not None]
            row[f"{kind}_delay"], row[f"{kind}_signal"] = min(delays) if delays else (None, None)
        row["before_labels"] = row["label_free_delay"] is not None and row["label_free_delay"] < delay
        shifts.append(row)
    compared = [c for c in chunks if c["realised"] is not None and c["estimated"] is not None]
    estimation = {}
    for key in ("estimated", "estimated_golden"):
        errors = np.array([c[key] - c["realised"] for c in compared])
        by_domain = {}
        for block in blocks:
            inside = [c[key] - c["realised"] for c in compared if block.start <= c["index"] * chunk < block.end]
            by_domain[block.domain] = float(np.mean(np.abs(inside))) if inside else None
        estimation[key] = {"mean_abs_error": float(np.mean(np.abs(errors))) if len(errors) else None,
                           "max_abs_error": float(np.max(np.abs(errors))) if len(errors) else None,
                           "mean_error": float(np.mean(errors)) if len(errors) else None, "mean_abs_error_by_domain": by_domain}
    return {
        "detections": detections, "shifts": shifts,
        "false_alarms": [d for d in detections if d["position"] < blocks[0].end],
        "estimation": {"chunks_compared": len(compared), **estimation},
    }


def print_report(results: dict[str, Any]) -> None:
    a, args = results["analysis"], results["args"]
    rows = [[s["domain"], str(s["start"]), *("-" if s["by_signal"][k] is None else str(s["by_signal"][k]) for k in (*LABEL_FREE, *LABEL_BASED)),
             f"{s['label_free_delay']} vs {s['label_based_delay']}", verdict(s["before_labels"])] for s in a["shifts"]]
    print_table(f"first detection after each shift, in traffic events (labels {args['label_delay']} events late, "
                f"{args['label_share']:.0%} labelled)", ["shift to", "at", *LABEL_FREE, *LABEL_BASED, "free vs labels", "before labels"],
                rows, left=(0,))
    print(f"after the first shift only {' and '.join(RE_REFERENCED)} count: the other signals compare with the golden set and "
          "keep firing while no retrain adapts the champion (this run retrains nothing)")
    print(f"false alarms on the stable stretch: {len(a['false_alarms'])} {[d['signal'] for d in a['false_alarms']]}")
    e = a["estimation"]
    if e["chunks_compared"]:
        adaptive, golden = e["estimated"], e["estimated_golden"]
        print_table(f"estimated (CBPE) vs realised accuracy, {e['chunks_compared']} chunks of {args['chunk']} traffic events: "
                    "mean |estimated - realised|", ["domain", "recalibrated on matured labels", "golden-set calibration only"],
                    [[d, *("n/a" if v is None else f"{v:.3f}" for v in (adaptive["mean_abs_error_by_domain"][d], golden["mean_abs_error_by_domain"][d]))]
                     for d in adaptive["mean_abs_error_by_domain"]])
        for name, figures in (("recalibrated", adaptive), ("golden only", golden)):
            print(f"{name:>12}: all chunks mean |error| {figures['mean_abs_error']:.3f}, max {figures['max_abs_error']:.3f}, "
                  f"mean signed {figures['mean_error']:+.3f} (> 0: optimistic)")
    t = results["targets"]
    print(f"targets: detected before labels {verdict(t['before_labels_met'])}, no false alarm {verdict(t['no_false_alarm_met'])}")
    note = load_note(results["machine"])
    if note:
        print(note)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, chunks = results["analysis"], results["chunks"]
    size = results["args"]["chunk"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    centers = [(c["index"] + 0.5) * size for c in chunks]
    top.plot(centers, [c["estimated"] for c in chunks], "-o", ms=3, label="estimated (CBPE; calibration refitted on matured labels)")
    top.plot(centers, [c["estimated_golden"] for c in chunks], ":", color="tab:blue", label="estimated, golden-set calibration only")
    top.plot(centers, [c["realised"] if c["realised"] is not None else np.nan for c in chunks], "-s", ms=3,
             label=f"realised (labels {results['args']['label_delay']} events later, {results['args']['label_share']:.0%} of events)")
    top.set_ylabel("champion accuracy per chunk")
    top.legend(loc="lower left")
    samples = results["samples"]
    for signal in ("prediction_shift", "confidence_drop"):
        bottom.plot([s["sent_traffic"] for s in samples], [s.get(f"stat_{signal}") for s in samples], label=f"{signal} statistic")
    for d in a["detections"]:
        bottom.axvline(d["position"], color="tab:red" if d["kind"] == "label_free" else "tab:gray", ls="--", lw=1)
    bottom.plot([], [], color="tab:red", ls="--", label="label-free detection")
    bottom.plot([], [], color="tab:gray", ls="--", label="label-based detection")
    bottom.set_xlabel("traffic events")
    bottom.legend(loc="upper left", fontsize=8)
    for axis in (top, bottom):
        for block in results["blocks"]:
            axis.axvline(block["start"], color="black", lw=0.8)
    for block in results["blocks"]:
        top.text(block["start"] + 50, top.get_ylim()[1] - 0.03, block["domain"], va="top")
    fig.suptitle("Label-free monitoring on a domain-shift stream with late, partial labels")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", nargs="+", default=["word_sentiment", "lstm", "bilstm"])
    p.add_argument("--profile", default="fast", choices=["fast", "full"])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--stable-events", type=int, default=4000, help="movie sentences streamed before the first shift")
    p.add_argument("--domains", nargs="+", default=["tweets", "amazon", "nyt"])
    p.add_argument("--events-per-domain", type=int, default=3000)
    p.add_argument("--eval-per-domain", type=int, default=300, help="kept back per domain (as in drift.py)")
    p.add_argument("--label-delay", type=int, default=2000, help="a label follows its prediction by this many traffic events")
    p.add_argument("--label-share", type=float, default=0.3, help="share of events that ever get a label")
    p.add_argument("--chunk", type=int, default=500, help="traffic events per estimate chunk (retrain.drift.prediction_window)")
    p.add_argument("--rate", type=float, default=300.0, help="records per second")
    p.add_argument("--replicas", type=int, default=20)
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    p.add_argument("--workdir", type=Path, help="keep the run's files here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "feedback.json")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "feedback.png")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sentiloop.consumers.broker import EmbeddedBroker, free_port

    started = time.perf_counter()
    records = vader_records(args.datasets)
    with tempfile.TemporaryDirectory(prefix="sentiloop-feedback-") as tmp:
        root = args.workdir or Path(tmp)
        port = free_port()
        run = bootstrap_movies(records, root, args, {"retrain": {"drift": {"prediction_window": args.chunk}}})
        data_dir, plan, version, bootstrap_s = run.data_dir, run.plan, run.version, run.seconds
        thresholds = asdict(calibrate_on_stable(run.champion, plan.blocks[0].records, run.settings, args.replicas))
        print("calibrated on the stable stretch: " + ", ".join(f"{k} {v:.4f}" for k, v in thresholds.items()))
        stream = build_stream(plan.blocks, run.settings.label_names, args.label_delay, args.label_share)
        print(f"stream: {stream.traffic:,} unlabelled events, {stream.labels:,} label events {args.label_delay} traffic events behind")

        with EmbeddedBroker("127.0.0.1", 0, root / "broker.log") as broker:
            config = daemon_config(data_dir, broker.bootstrap, port, thresholds, args)
            with serving_daemon(config, root, port, version) as daemon:
                samples = send(daemon, broker.bootstrap, stream, args.rate)
                wait_for("every event and label scored", lambda: (m := daemon.metrics()) is not None
                         and m.get("sentiloop_monitored_events_total", 0) >= stream.traffic
                         and m.get("sentiloop_drift_scored_events_total", 0) >= stream.labels, 600, daemon)
                status = admin_status(data_dir, port)
                final = daemon.metrics() or {}
            daemon_log = daemon.log()

    chunks = status["monitoring"]["chunks"]
    analysis = analyse(plan.blocks, stream, daemon_log, chunks, args.label_delay, args.chunk)
    results: dict[str, Any] = {
        "benchmark": "feedback",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "args": plain_args(args),
        "bootstrap": {"version": version, "seconds": bootstrap_s, "movie_sentences": len(plan.champion_records)},
        "thresholds": thresholds,
        "golden_ece": status["monitoring"]["golden_ece"],
        "blocks": [{"domain": b.domain, "start": b.start, "events": len(b.records)} for b in plan.blocks],
        "stream": {"traffic": stream.traffic, "labels": stream.labels},
        "label_delay_seconds_mean": (final.get("sentiloop_label_delay_seconds_sum", 0) / final["sentiloop_label_delay_seconds_count"]
                                     if final.get("sentiloop_label_delay_seconds_count") else None),
        "analysis": analysis, "chunks": chunks, "samples": samples,
        "daemon_log": [line for line in daemon_log.splitlines() if "drift signal" in line or "Traceback" in line or "Error" in line],
    }
    results["targets"] = {"before_labels_met": all(s["before_labels"] for s in analysis["shifts"]),
                          "no_false_alarm_met": not analysis["false_alarms"]}
    results["total_seconds"] = time.perf_counter() - started
    print_report(results)
    print(OMP_NOTE)
    plot(results, args.plot)
    write_json(args.out, results)
    print(f"results written to {args.out}, plot to {args.plot} (whole run {results['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
