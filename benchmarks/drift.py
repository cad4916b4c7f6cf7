"""Drift benchmark: a domain-shift stream through the real daemon and broker.

Does drift-triggered retraining notice a change of domain quickly, stay quiet while nothing changes,
and leave the ensemble better on the new domain without forgetting the old one? One run:

  1. bootstrap    a champion (``train_ensemble``, --profile) on movie sentences only. The movies are
                  split once: --stable-events of them are the stable stretch of the stream, the rest
                  is the champion's labelled file (its 80/10/10 split: training, golden set, and a
                  movie evaluation set that is neither trained on nor streamed);
  2. calibration  the documented procedure: the same champion scores the stable stretch OFFLINE and
                  ``sentiloop.monitoring.drift.calibrate`` turns its errors and labels into
                  ``retrain.drift.ph_threshold`` and ``label_threshold`` (largest statistic over shuffled
                  replicas x 1.2); the OOV margin is set the same way. Printed, then written into the
                  daemon's config;
  3. stream       ``python -m sentiloop run`` as a subprocess, an embedded broker on 127.0.0.1 (free
                  port), one partition (stream order = buffer order). A paced producer sends the stable
                  movie stretch, then --domains in order (default tweets → amazon → nyt; held-out
                  sentences only: --eval-per-domain of each are kept back for evaluation). Drift-triggered
                  retraining is on, the volume trigger off (volume_threshold 10^9), policy warm-up 1,000
                  events, cool-down --cooldown-s. The producer pauses while a retrain worker runs, so the
                  stream positions do not depend on how fast this machine trains;
  4. measure      detections from the daemon's log ("drift signal S after N scored events": N is the
                  stream position, exact), /metrics polled along the stream (rolling accuracy of the
                  serving champion, drift statistics, champion version, retrain runs), a trivial periodic
                  trigger (every --period events) judged on the same positions, and every version (champions
                  and refused challengers) evaluated on the held-out sentences of each domain.

Targets: delay <= 1,000 events after each shift; no detection on the stable stretch (the periodic
trigger's count there is its false alarms); forgetting (movie accuracy, champion before the shift →
champion at the end of the new domain's block) <= 1 point; every shift ends with a promoted champion
at least 8 points better on the new domain (issue 11). ``--seed`` changes the members' seed and which
sentences are stable, champion, streamed and evaluation: run it three times for the spread.
Also plots accuracy and drift statistics along the stream (default benchmarks/results/drift.png).

Run from the repository root:  .venv/bin/python benchmarks/drift.py [--members word_sentiment lstm] ...
(default members word_sentiment lstm bilstm keep the run to minutes; add BERT with --members ... bert).
Prints a table and writes JSON (default benchmarks/results/drift.json).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; inherited by the daemon (see _common.OMP_NOTE)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no per-load weight report in the output

import argparse
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import yaml
from tqdm import tqdm

from benchmarks._common import (
    DEFAULT_DATASETS,
    MEMBERS,
    OMP_NOTE,
    REPO,
    RESULTS_DIR,
    accuracy,
    bench_config,
    bootstrap_champion,
    by_domain,
    configure_threads,
    deep_merge,
    feedback_event,
    load_note,
    load_version,
    machine_info,
    plain_args,
    predictions,
    print_table,
    profile_overrides,
    shuffled,
    vader_records,
    verdict,
    write_json,
)
from sentiloop.config import ModelsConfig, Settings
from sentiloop.datasets import VADER_DOMAINS, Record, split_dataset
from sentiloop.retrainers.results import IterationResult, RetrainSummary

DEFAULT_SEED = ModelsConfig().seed

RESULTS = RESULTS_DIR / "drift.json"
PLOT = RESULTS_DIR / "drift.png"
TOPIC = "bench.drift"
TARGET_DELAY = 1000
TARGET_FORGETTING = 0.01
TARGET_GAIN = 0.08  # every shift ends with a promoted champion this much better on the new domain
CALIBRATION_MARGIN = 1.2  # calibrate()'s default: thresholds = stable maximum x 1.2
SIGNALS = ("error_rate", "label_shift", "oov_rate")
DETECTION = re.compile(r"drift signal (\w+) after (\d+) scored (?:traffic |labelled )?events: (.*)")
LOG_KEEP = re.compile(r"drift signal|retrain|champion|reference|Traceback|Error")  # daemon log lines kept in the JSON

log = logging.getLogger("benchmarks.drift")


# -- the stream ----------------------------------------------------------------------------------
@dataclass
class Block:
    """One domain's stretch of the stream: events [start, start + len(records))."""

    domain: str
    start: int
    records: list[Record]
    eval_records: list[Record]

    @property
    def end(self) -> int:
        return self.start + len(self.records)


@dataclass
class Plan:
    champion_records: list[Record]  # the champion's labelled file (train / golden / movie evaluation)
    movie_eval: list[Record]  # the file split's test part: neither trained on nor streamed
    blocks: list[Block] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.blocks[-1].end if self.blocks else 0


def make_plan(records: list[Record], args: argparse.Namespace, seed: int) -> Plan:
    """Partition the sentences: stable stretch, champion file, per-domain evaluation and stream parts."""
    domains = by_domain(records)
    salt = "drift" if args.seed == DEFAULT_SEED else f"drift-{args.seed}"
    movies = shuffled(domains["movies"], salt)
    if args.stable_events > len(movies) - 2000:
        raise SystemExit(f"--stable-events {args.stable_events}: keep at least 2,000 of the {len(movies)} movie sentences for the champion")
    stable, champion = movies[: args.stable_events], movies[args.stable_events :]
    plan = Plan(champion, split_dataset(champion, seed=seed).test)
    plan.blocks.append(Block("movies", 0, stable, plan.movie_eval))
    for domain in args.domains:
        pool = shuffled(domains[domain], salt)
        held, rest = pool[: args.eval_per_domain], pool[args.eval_per_domain :]
        plan.blocks.append(Block(domain, plan.total, rest[: args.events_per_domain or None], held))
    return plan


# -- calibration ---------------------------------------------------------------------------------
@dataclass
class Calibration:
    ph_threshold: float
    label_threshold: float
    oov_margin: float
    ph_stable_max: float
    label_stable_max: float
    oov_stable_max: float
    oov_baseline: float
    stable_error_rate: float
    replicas: int
    events: int
    prediction_threshold: float
    confidence_margin: float


def champion_tokenizer_and_vocabulary(champion: Any) -> tuple[Callable[[str], list[str]], set[str]]:
    """What the daemon's OOV detector uses (the champion's own tokenizer); the benchmark needs a vocabulary."""
    from sentiloop.monitoring.drift_monitor import champion_vocabulary

    known = champion_vocabulary(champion)
    if known is None:
        raise SystemExit("the champion has no member with a vocabulary: the OOV signal cannot be calibrated")
    return known


def oov_stable_max(champion: Any, texts: Sequence[str], window: int, replicas: int, seed: int) -> float:
    """Largest windowed OOV rate over shuffled replicas of the stable stretch (what calibrate() does for the others)."""
    tokenize, vocabulary = champion_tokenizer_and_vocabulary(champion)
    counts = np.array([(sum(t not in vocabulary for t in tokens), len(tokens)) for tokens in map(tokenize, texts)], dtype=float)
    rng, peak = np.random.default_rng(seed), 0.0
    for _ in range(replicas):
        shuffled_counts = counts[rng.permutation(len(counts))]
        for start in range(0, len(counts) - window + 1, window // 2):
            unknown, total = shuffled_counts[start : start + window].sum(axis=0)
            peak = max(peak, unknown / max(1.0, total))
    return peak


def calibrate_on_stable(champion: Any, stable: Sequence[Record], settings: Settings, replicas: int) -> Calibration:
    """The documented procedure: thresholds from the champion's own errors on stable data, before streaming."""
    from sentiloop.monitoring.drift import OOVRateDrift, calibrate
    from sentiloop.monitoring.label_free import calibrate_label_free
    from sentiloop.retrainers.data import golden_pool, original_split

    d = settings.retrain.drift
    labels = np.array([r.label for r in stable])
    errors = predictions(champion, stable) != labels
    original = original_split(settings, champion.info)
    if original is None:
        raise SystemExit("the champion's data file is gone: cannot compute the daemon's drift baselines")
    train, golden = original
    c = calibrate(errors, labels, len(settings.labels), window=d.label_window, margin=CALIBRATION_MARGIN,
                  ph_delta=d.ph_delta, min_instances=d.min_instances, replicas=replicas, seed=0,
                  reference_labels=[*train.labels, *golden.labels])  # the daemon's label reference
    oov = oov_stable_max(champion, [r.text for r in stable], d.oov_window, replicas, seed=0)
    # The daemon's OOV baseline is the rate on the champion's golden set, so the margin is what is left up to the threshold.
    baseline = OOVRateDrift.rate(*champion_tokenizer_and_vocabulary(champion), golden.texts)
    margin = min(1.0, max(0.01, oov * CALIBRATION_MARGIN - baseline))
    free = calibrate_label_free(np.asarray(champion.predict_proba([r.text for r in stable])),
                                np.asarray(champion.predict_proba(golden_pool(golden, champion.info).texts)), d.prediction_window,
                                margin=CALIBRATION_MARGIN, replicas=replicas)
    return Calibration(float(c.ph_threshold), float(c.label_threshold), float(margin), float(c.ph_stable_max),
                       float(c.label_stable_max), float(oov), float(baseline), float(errors.mean()), replicas, len(stable),
                       free.prediction_threshold, free.confidence_margin)


def print_calibration(c: Calibration, settings: Settings, config_path: Path) -> None:
    d = settings.retrain.drift
    print(
        "\n== drift calibration (documented procedure: on stable data, before streaming) ==\n"
        f"1. the champion scored the stable stretch offline: {c.events} movie sentences, error rate {c.stable_error_rate:.3f}\n"
        f"2. sentiloop.monitoring.drift.calibrate(errors, labels, window={d.label_window}, ph_delta={d.ph_delta}, "
        f"min_instances={d.min_instances}, replicas={c.replicas}, margin={CALIBRATION_MARGIN}):\n"
        f"     Page-Hinkley statistic, max over {c.replicas} shuffled replicas   {c.ph_stable_max:8.3f} "
        f"-> retrain.drift.ph_threshold    = {c.ph_threshold:.3f}\n"
        f"     label JS distance, max over windows of {d.label_window:<5}        {c.label_stable_max:8.3f} "
        f"-> retrain.drift.label_threshold = {c.label_threshold:.3f}\n"
        f"   the same for the OOV rate (windows of {d.oov_window}; 1.2 x max minus the daemon's baseline, "
        f"the golden set's {c.oov_baseline:.3f}):\n"
        f"     OOV rate, max over shuffled windows                      {c.oov_stable_max:8.3f} -> retrain.drift.oov_margin    = {c.oov_margin:.3f}\n"
        f"   label-free (sentiloop.monitoring.label_free.calibrate_label_free, windows of {d.prediction_window}): "
        f"prediction_threshold = {c.prediction_threshold:.3f}, confidence_margin = {c.confidence_margin:.3f}\n"
        f"3. written into the daemon config {config_path} (ADWIN keeps adwin_delta={d.adwin_delta})"
    )


# -- the daemon ----------------------------------------------------------------------------------
def daemon_config(data_dir: Path, bootstrap: str, port: int, calibration: Calibration, args: argparse.Namespace) -> dict[str, Any]:
    """Library defaults except: this broker and port, one partition, members/profile, the trigger policy, thresholds."""
    overrides = deep_merge(profile_overrides(data_dir, args.members, args.profile), {
        "models": {"seed": args.seed},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": TOPIC, "group_id": "bench.drift", "partitions": 1, "poll_timeout_ms": 200},
        "metrics": {"host": "127.0.0.1", "port": port},
        "dictionary": {"snapshot_every": 0},
        "retrain": {
            "enabled": True, "mode": "strategic", "volume_threshold": 10**9, "max_iterations": args.max_iterations,
            "policy": {"warmup_events": 1000, "cooldown_s": args.cooldown_s, "max_retrains": 100},
            "drift": {"ph_threshold": calibration.ph_threshold, "label_threshold": calibration.label_threshold,
                      "oov_margin": calibration.oov_margin, "prediction_threshold": calibration.prediction_threshold,
                      "confidence_margin": calibration.confidence_margin},
        },
        "log_level": "INFO",
    })
    return bench_config(data_dir, args.members, overrides)


class Daemon:
    """``python -m sentiloop run --config FILE`` as a child process (as an operator would start it)."""

    def __init__(self, config_path: Path, log_path: Path, port: int, env: dict[str, str]) -> None:
        self.config_path, self.log_path, self.port, self.env = config_path, log_path, port, env
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        self.process = subprocess.Popen([sys.executable, "-m", "sentiloop", "run", "--config", str(self.config_path)],
                                        stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=self.env,
                                        stdin=subprocess.DEVNULL)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> dict[str, float] | None:
        """The /metrics samples as {'name{label="v",...}': value}; None while the endpoint is not up."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
        return out


def snapshot(m: dict[str, float], produced: int, t0: float) -> dict[str, Any]:
    """The few series the benchmark follows, from one /metrics scrape."""
    return {
        "t": round(time.monotonic() - t0, 2),
        "produced": produced,
        "stored": int(m.get("sentiloop_events_stored_total", 0)),
        "accuracy": m.get('sentiloop_model_accuracy{member="ensemble",split="stream"}'),
        **{f"stat_{s}": m.get(f'sentiloop_drift_statistic{{signal="{s}"}}') for s in SIGNALS},
        "stat_page_hinkley": m.get('sentiloop_drift_statistic{signal="page_hinkley"}'),
        **{f"detected_{s}": m.get(f'sentiloop_drift_detected_total{{signal="{s}"}}', 0.0) for s in SIGNALS},
        "champion": int(m.get("sentiloop_champion_version", 0)),
        "retrain_running": int(m.get("sentiloop_retrain_running", 0)),
        "promotions": int(m.get("sentiloop_promotions_total", 0)),
    }


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, daemon: Daemon, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited while waiting for {what}; log:\n{daemon.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}; log tail:\n{daemon.log()[-3000:]}")
        time.sleep(every)


@dataclass
class Bootstrapped:
    """A run's movie champion and what it was made from (shared by drift.py and feedback.py)."""

    data_dir: Path
    settings: Settings  # the benchmark's base settings (members, profile, seed)
    plan: Plan
    version: int
    seconds: float
    champion: Any


def bootstrap_movies(records: list[Record], root: Path, args: argparse.Namespace,
                     overrides: dict[str, Any] | None = None) -> Bootstrapped:
    """A fresh data_dir under ``root``, the sentences partitioned (``make_plan``) and a champion trained
    on the movie part; ``overrides`` adds settings to the members/profile/seed ones."""
    data_dir = root / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    base = Settings.model_validate(bench_config(data_dir, args.members, deep_merge(
        profile_overrides(data_dir, args.members, args.profile), deep_merge({"models": {"seed": args.seed}}, overrides or {}))))
    configure_threads(base.models.threads)
    plan = make_plan(records, args, base.models.seed)
    print(f"bootstrap: {', '.join(args.members)} ({args.profile} profile) on {len(plan.champion_records):,} movie sentences "
          "(the daemon reads its golden set and replay from that file, never from the VADER cache)")
    version, seconds = bootstrap_champion(base, plan.champion_records, args.profile, root / "champion-movies.jsonl")
    return Bootstrapped(data_dir, base, plan, version, seconds, load_version(data_dir, version, args.members))


@contextmanager
def serving_daemon(config: dict[str, Any], root: Path, port: int, version: int) -> Iterator[Daemon]:
    """``python -m sentiloop run`` with ``config`` (written to root/daemon.yaml), once it serves champion ``version``."""
    config_path = root / "daemon.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # The daemon and its retrain workers import sentiloop from this checkout, like this process does.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SENTILOOP_VADER_SDIST": str(root / "no-vader-sdist"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("SENTILOOP_CONFIG", None)  # never let the caller's config leak in
    log_path = root / "daemon.log"
    log_path.unlink(missing_ok=True)
    with Daemon(config_path, log_path, port, env) as daemon:
        wait_for(f"the daemon to serve champion v{version}", lambda: (m := daemon.metrics()) is not None
                 and m.get("sentiloop_champion_version") == version, 120, daemon)
        yield daemon


class Streamer:
    """Paced producer that scrapes /metrics as it goes and pauses while a retrain worker runs."""

    def __init__(self, daemon: Daemon, bootstrap: str, rate: float, label_names: list[str], retrain_timeout_s: float) -> None:
        from sentiloop.config import KafkaConfig
        from sentiloop.consumers.clients import ensure_topics, make_producer

        config = KafkaConfig(bootstrap_servers=[bootstrap], topic=TOPIC, partitions=1)
        ensure_topics(config, [bootstrap], [TOPIC])
        self.producer = make_producer(config, [bootstrap], linger_ms=0)
        self.daemon, self.rate, self.label_names, self.retrain_timeout_s = daemon, rate, label_names, retrain_timeout_s
        self.t0 = time.monotonic()
        self.produced = 0
        self.samples: list[dict[str, Any]] = []
        self.pauses: list[dict[str, Any]] = []
        self.block_champions: list[int] = []  # the serving champion when each block starts

    def scrape(self) -> dict[str, Any] | None:
        m = self.daemon.metrics()
        if m is None:
            return None
        self.samples.append(snapshot(m, self.produced, self.t0))
        return self.samples[-1]

    def stream(self, blocks: Sequence[Block], settle_timeout_s: float) -> None:
        with tqdm(total=blocks[-1].end, unit="ev", desc="stream") as bar:
            for block in blocks:
                self.settle(settle_timeout_s)  # every shift starts from a caught-up daemon and a settled champion
                self.block_champions.append(self.samples[-1]["champion"])
                bar.set_postfix_str(f"{block.domain} @ {self.rate:g} ev/s")
                self.send_block(block, bar)
            self.settle(settle_timeout_s)

    def send_block(self, block: Block, bar: tqdm) -> None:
        started, sent, last_scrape = time.monotonic(), 0, 0.0
        for record in block.records:
            delay = started + sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = feedback_event(record, self.label_names)
            self.producer.send(TOPIC, value=json.dumps(event, ensure_ascii=False).encode(), key=event["event_id"].encode())
            sent += 1
            self.produced += 1
            bar.update()
            if time.monotonic() - last_scrape >= 0.5:
                last_scrape = time.monotonic()
                sample = self.scrape()
                if sample is not None and sample["retrain_running"]:
                    bar.set_postfix_str(f"{block.domain}: paused, retrain running")
                    self.pause_for_retrain()
                    bar.set_postfix_str(f"{block.domain} @ {self.rate:g} ev/s")
                    started, sent = time.monotonic(), 0  # resume the pace from here
        self.producer.flush()

    def pause_for_retrain(self) -> None:
        self.producer.flush()
        began = time.monotonic()
        first = self.samples[-1]
        wait_for("the retrain worker", lambda: (s := self.scrape()) is not None and not s["retrain_running"],
                 self.retrain_timeout_s, self.daemon, every=1.0)
        self.pauses.append({"produced": first["produced"], "stored": first["stored"], "seconds": round(time.monotonic() - began, 1),
                            "champion_before": first["champion"], "champion_after": self.samples[-1]["champion"]})

    def settle(self, timeout_s: float, max_retrains: int = 5) -> None:
        """Wait until every produced event is stored and no retrain runs or is about to start."""
        wait_for("the daemon to store every event", lambda: (s := self.scrape()) is not None and s["stored"] >= self.produced,
                 timeout_s, self.daemon)
        for _ in range(max_retrains):
            time.sleep(4.5)  # two controller ticks (CHECK_S = 2 s): a latched signal may launch a retrain now
            if (s := self.scrape()) is None or not s["retrain_running"]:
                return
            self.pause_for_retrain()

    def close(self) -> None:
        self.producer.close()


# -- results -------------------------------------------------------------------------------------
def detections_from_log(text: str) -> list[dict[str, Any]]:
    return [{"signal": m.group(1), "position": int(m.group(2)), "reason": m.group(3).strip()} for m in DETECTION.finditer(text)]


def periodic_baseline(period: int, blocks: Sequence[Block]) -> dict[str, Any]:
    """A trigger every ``period`` events: its firings on the stable stretch are false alarms; its delay
    after a shift at position s is the distance to the next multiple of ``period`` (a retrain there)."""
    stable = blocks[0]
    delays = {b.domain: (b.start // period + 1) * period - b.start for b in blocks[1:]}
    return {"period": period, "false_alarms": stable.end // period, "delays": delays,
            "firings": blocks[-1].end // period, "fire_positions": list(range(period, blocks[-1].end + 1, period))}


def read_retrains(data_dir: Path, pauses: Sequence[dict[str, Any]], blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """Every retrain worker's outcome (its JSON summary), with the stream position and domain it started at."""
    out = []
    outputs = [p for p in (data_dir / "retrain").glob("worker-*.json") if not p.name.endswith(".progress.json")]  # not the progress files
    for i, path in enumerate(sorted(outputs)):
        try:
            summary = RetrainSummary.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no summary (the worker failed): its log says why
            log_lines = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            summary = RetrainSummary.failed(log_lines[-1] if log_lines else "no output")
        pools = summary.pools
        position = (pools.until_seq if pools else None) or (pauses[i]["stored"] if i < len(pauses) else None)
        domain = next((b.domain for b in blocks if position is not None and b.start < position <= b.end), None)
        out.append({"position": position, "domain": domain, "status": summary.status.value,
                    "version": summary.version, "new_events": pools.new if pools else None,
                    "reasons": summary.verdict_reasons,
                    "gate_metrics": summary.gate_metrics.model_dump(mode="json") if summary.gate_metrics else {},
                    "pools": pools.model_dump(mode="json") if pools else {},
                    "last_iteration": _iteration_digest(summary.last_iteration)})
    return out


def _iteration_digest(iteration: IterationResult | None) -> dict[str, Any]:
    """What explains a gate verdict: weights, each member's golden/recent accuracy, time per member."""
    if iteration is None:
        return {"weights": {}, "durations": {}, "accuracy": {}}
    accuracy = {owner: {split: value for split, value in splits.items() if split in ("golden", "recent")}
                for owner, splits in iteration.metrics.items()}
    return {"weights": iteration.weights, "durations": iteration.durations,
            "accuracy": {owner: splits for owner, splits in accuracy.items() if splits}}


def analyse(plan: Plan, streamer: Streamer, detections: list[dict[str, Any]], accuracy_table: dict[int, dict[str, float]],
            period: int) -> dict[str, Any]:
    blocks = plan.blocks
    stable = blocks[0]
    false_alarms = [d for d in detections if d["position"] <= stable.end]
    shifts = []
    for i, block in enumerate(blocks[1:], start=1):
        inside = [d for d in detections if block.start < d["position"] <= block.end]
        first = min(inside, key=lambda d: d["position"]) if inside else None
        before = streamer.block_champions[i]
        after = streamer.block_champions[i + 1] if i + 1 < len(streamer.block_champions) else streamer.samples[-1]["champion"]
        previous = blocks[i - 1].domain
        shifts.append({
            "shift": f"{previous}→{block.domain}", "position": block.start, "events": len(block.records),
            "delay": first["position"] - block.start if first else None, "first_signal": first["signal"] if first else None,
            "detections": inside, "champion_before": before, "champion_after": after,
            "new_before": accuracy_table[before][block.domain], "new_after": accuracy_table[after][block.domain],
            "old_before": accuracy_table[before]["movies"], "old_after": accuracy_table[after]["movies"],
            "previous_domain": previous,
            "previous_before": accuracy_table[before][previous], "previous_after": accuracy_table[after][previous],
        })
    return {"false_alarms": false_alarms, "shifts": shifts, "periodic": periodic_baseline(period, blocks)}


def print_report(results: dict[str, Any]) -> None:
    a, analysis, m = results["args"], results["analysis"], results["machine"]
    periodic = analysis["periodic"]
    stream = " → ".join(f"{b['domain']} {b['events']:,}" for b in results["blocks"])
    rows = [["false alarms on the stable stretch", str(len(analysis["false_alarms"])), str(periodic["false_alarms"]), "0",
             verdict(not analysis["false_alarms"])]]
    for s in analysis["shifts"]:
        delay = "missed" if s["delay"] is None else f"{s['delay']:,} ({s['first_signal']})"
        rows.append([f"delay after {s['shift']} (events)", delay, f"{periodic['delays'][s['shift'].split('→')[1]]:,}",
                     f"<= {TARGET_DELAY:,}", verdict(s["delay"] is not None and s["delay"] <= TARGET_DELAY)])
    runs = results["retrain_runs"]
    rows.append(["retrains (promoted / rejected / other)",
                 f"{runs['total']} ({runs['promoted']} / {runs['rejected']} / {runs['total'] - runs['promoted'] - runs['rejected']})",
                 str(periodic["firings"]), "", ""])
    print_table(
        f"sentiloop drift benchmark — members {', '.join(a['members'])} (add BERT with --members ... bert); profile {a['profile']}; "
        f"max_iterations {a['max_iterations']}\nstream {stream} events at {a['rate']:g} ev/s; {m['cpus_usable']} CPUs",
        ["", "daemon (drift)", f"periodic every {periodic['period']:,}", "target", "verdict"], rows,
    )
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    rows = []
    for s in analysis["shifts"]:
        gain, forgetting = s["new_after"] - s["new_before"], s["old_before"] - s["old_after"]
        versions = f"v{s['champion_before']} → v{s['champion_after']}"
        rows.append([f"{s['shift']}: {s['shift'].split('→')[1]} (new)", versions, f"{pct(s['new_before'])} → {pct(s['new_after'])}",
                     f"{100 * gain:+.1f} pt", f"promoted, >= +{100 * TARGET_GAIN:.0f} pt",
                     verdict(s["champion_after"] != s["champion_before"] and gain >= TARGET_GAIN)])
        rows.append(["    movies (old, forgetting)", "", f"{pct(s['old_before'])} → {pct(s['old_after'])}",
                     f"{-100 * forgetting:+.1f} pt", f"drop <= {100 * TARGET_FORGETTING:.0f} pt", verdict(forgetting <= TARGET_FORGETTING)])
        if s["previous_domain"] != "movies":
            rows.append([f"    {s['previous_domain']} (previous)", "", f"{pct(s['previous_before'])} → {pct(s['previous_after'])}",
                         f"{100 * (s['previous_after'] - s['previous_before']):+.1f} pt", "", ""])
    print_table("accuracy on held-out sentences, champion serving at the shift → champion serving at the end of that domain",
                ["", "champion", "accuracy %", "change", "target", "verdict"], rows)
    table, rows = results["accuracy_by_version"], []
    for i, r in enumerate(results["retrains"], 1):
        version = r["version"]
        accuracy_now = table.get(str(version)) if version else None
        new = f"{pct(accuracy_now[r['domain']])}" if accuracy_now and r["domain"] in accuracy_now else ""
        old = f"{pct(accuracy_now['movies'])}" if accuracy_now else ""
        why = "; ".join(r["reasons"])
        rows.append([f"#{i} at event {r['position']:,} ({r['domain']})" if r["position"] is not None else f"#{i}",
                     str(r["new_events"] or ""), r["status"], f"v{version}" if version else "", new, old,
                     why[:70] + ("…" if len(why) > 70 else "")])
    if rows:
        print_table("the daemon's retrains (challengers are kept even when refused; accuracy on the held-out sentences)",
                    ["", "new events", "outcome", "version", "domain acc %", "movies acc %", "gate's reasons"], rows, left=(0, 6))
    if not results["promotions"] and len(analysis["shifts"]) > 1:
        print("note: no challenger was promoted, so the bootstrap champion served the whole stream: after the first shift its OOV "
              "and error alarms persist into every later block, so a later 'delay' may be that persistence, not a detection "
              "of the new shift (label_shift re-bases its reference on each reset, so its detections are the cleaner ones)")
    if note := load_note(m):
        print(note)


def plot(results: dict[str, Any], path: Path) -> None:
    """Rolling accuracy of the serving champion and the drift statistics along the stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [s for s in results["samples"] if s["accuracy"] is not None]
    x = np.array([s["stored"] for s in samples])
    thresholds = results["thresholds"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 8.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.1]})
    colours = {"movies": "#e8f0fb", "tweets": "#fdf1e2", "amazon": "#eaf6ea", "nyt": "#f3eaf6"}
    for ax in (top, bottom):
        for b in results["blocks"]:
            ax.axvspan(b["start"], b["start"] + b["events"], color=colours.get(b["domain"], "#eeeeee"), zorder=0)
            if b["start"]:
                ax.axvline(b["start"], color="black", lw=1.2, ls="--", zorder=1)
    for b in results["blocks"]:
        label = f"{b['domain']} (stable)" if b["start"] == 0 else b["domain"]
        top.text(b["start"] + b["events"] / 2, 1.01, label, ha="center", va="bottom", transform=top.get_xaxis_transform(), fontsize=10)
    top.plot(x, [s["accuracy"] for s in samples], color="#1f4e9c", lw=1.5, label="serving champion, rolling accuracy (last 500 events)")
    for p in results["promotions"]:
        top.axvline(p["position"], color="#2a9d3a", lw=1.5)
        top.annotate(f"v{p['version']}", (p["position"], 0.04), xytext=(3, 0), textcoords="offset points", color="#2a9d3a",
                     fontsize=9, xycoords=("data", "axes fraction"))
    top.plot([], [], color="#2a9d3a", lw=1.5, label="promotion (hot swap)")
    outcome_colours = {"promoted": "#2a9d3a", "rejected": "#7f8c8d", "failed": "#c0392b"}
    for r in results["retrains"]:
        if r["position"] is not None:
            top.plot(r["position"], 0.93, marker="D", ms=7, color=outcome_colours.get(r["status"], "#bbbbbb"),
                     transform=top.get_xaxis_transform(), clip_on=False)
    top.plot([], [], "D", color="#7f8c8d", label="retrain (green promoted, grey refused by the gate, red failed); stream paused")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="lower left", fontsize=9, framealpha=0.9)
    styles = {"error_rate": ("#c0392b", "error rate (last 300; fires via Page-Hinkley/ADWIN)"), "label_shift": ("#8e44ad", "label JS distance (window 1,000)"),
              "oov_rate": ("#d68910", "OOV rate (window 1,000)")}
    for signal_name, (colour, label) in styles.items():
        y = [s[f"stat_{signal_name}"] for s in samples]  # a windowed statistic reads 0 until its window is full
        bottom.plot(x, [v if v else np.nan for v in y], color=colour, lw=1.3, label=label)
        if thresholds.get(signal_name) is not None:
            bottom.axhline(thresholds[signal_name], color=colour, lw=0.9, ls=":")
    if thresholds.get("page_hinkley"):
        ph = [s.get("stat_page_hinkley") for s in samples]
        bottom.plot(x, [np.nan if v is None else min(v / thresholds["page_hinkley"], 1.0) for v in ph], color="#c0392b", lw=1.0,
                    ls="--", label="Page-Hinkley statistic / threshold (fires at 1)")
    for d in results["detections"]:
        colour = styles.get(d["signal"], ("black", ""))[0]
        bottom.plot(d["position"], 0.97, marker="v", color=colour, ms=9, transform=bottom.get_xaxis_transform(), clip_on=False)
    bottom.plot([], [], "v", color="grey", label="detection (colour = signal)")
    fires = results["analysis"]["periodic"]["fire_positions"]
    bottom.plot(fires, [0.02] * len(fires), "|", color="grey", ms=12, mew=2, transform=bottom.get_xaxis_transform(),
                label=f"periodic trigger (every {results['analysis']['periodic']['period']:,})")
    bottom.set_ylim(0, 1.0)
    bottom.set_ylabel("drift statistic (dotted: threshold)")
    bottom.set_xlabel("events in the stream (stored = scored by the drift monitor)")
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=9, ncol=3, frameon=False)
    bottom.set_xlim(0, results["blocks"][-1]["start"] + results["blocks"][-1]["events"])
    a = results["args"]
    fig.suptitle(f"sentiloop drift benchmark: {', '.join(a['members'])} ({a['profile']} profile), drift-triggered strategic retrains",
                 fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/drift.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", choices=MEMBERS, default=["word_sentiment", "lstm", "bilstm"],
                        help="ensemble members (default: %(default)s; add bert for the full ensemble: slower, BERT dominates every retrain)")
    parser.add_argument("--profile", choices=("fast", "full"), default="full",
                        help="training budget of the bootstrap and of the daemon's retrains (default: %(default)s, about 9 minutes "
                             "with the default members; fast: about 6, but its one-epoch members swing a lot between retrains)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="the members' seed and the stream's order: which sentences are stable, champion, streamed "
                             "or evaluation (default: %(default)s, the library's models.seed)")
    parser.add_argument("--stable-events", type=int, default=5000, help="held-out movie sentences streamed first (default: %(default)s)")
    parser.add_argument("--domains", nargs="+", choices=[d for d in VADER_DOMAINS if d != "movies"], default=["tweets", "amazon", "nyt"],
                        help="domains streamed after the stable stretch, in order (default: %(default)s)")
    parser.add_argument("--events-per-domain", type=int, default=0, help="cap per new domain (default: all its held-out sentences)")
    parser.add_argument("--eval-per-domain", type=int, default=500, help="sentences of each domain kept back for evaluation (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=100.0, help="producer rate, events/s (default: %(default)s)")
    parser.add_argument("--period", type=int, default=2000, help="the trivial periodic trigger's period in events (default: %(default)s)")
    parser.add_argument("--max-iterations", type=int, default=1, help="retrain.max_iterations of the daemon's retrains (default: %(default)s)")
    parser.add_argument("--cooldown-s", type=float, default=30.0, help="retrain.policy.cooldown_s, wall clock from a retrain's start; "
                        "the stream is paused while the retrain runs, so most of it elapses then (default: %(default)s)")
    parser.add_argument("--replicas", type=int, default=20, help="shuffled replicas for the calibration (default: %(default)s)")
    parser.add_argument("--retrain-timeout", type=float, default=900.0, help="seconds one retrain may take (default: %(default)s)")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS,
                        help="a `datasets` folder holding vader_gt/ (default: ./sentiloop-data/datasets from `sentiloop data fetch`)")
    parser.add_argument("--workdir", type=Path, help="keep the data dir, config and daemon log here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results (default: benchmarks/results/drift.json)")
    parser.add_argument("--plot", type=Path, default=PLOT, help="PNG plot (default: benchmarks/results/drift.png)")
    args = parser.parse_args(argv)
    if args.stable_events < 1 or args.rate <= 0 or args.period < 1 or args.eval_per_domain < 1:
        parser.error("--stable-events, --rate, --period and --eval-per-domain must be positive")
    if args.stable_events < 5000:
        print(f"note: --stable-events {args.stable_events} < 5,000, the stable stretch the issue asks for")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sentiloop.consumers.broker import EmbeddedBroker, free_port

    started = time.perf_counter()
    records = vader_records(args.datasets)
    with tempfile.TemporaryDirectory(prefix="sentiloop-drift-") as tmp:
        root = args.workdir or Path(tmp)
        port = free_port()
        run = bootstrap_movies(records, root, args)
        data_dir, plan, version, bootstrap_s = run.data_dir, run.plan, run.version, run.seconds
        calibration = calibrate_on_stable(run.champion, plan.blocks[0].records, run.settings, args.replicas)

        with EmbeddedBroker("127.0.0.1", 0, root / "broker.log") as broker:
            config = daemon_config(data_dir, broker.bootstrap, port, calibration, args)
            settings = Settings.model_validate(config)
            print_calibration(calibration, settings, root / "daemon.yaml")
            with serving_daemon(config, root, port, version) as daemon:
                streamer = Streamer(daemon, broker.bootstrap, args.rate, settings.label_names, args.retrain_timeout)
                try:
                    streamer.stream(plan.blocks, args.retrain_timeout)
                finally:
                    streamer.close()
                final = daemon.metrics() or {}
            daemon_log = daemon.log()

        from sentiloop.models.store import ModelStore

        retrains = read_retrains(data_dir, streamer.pauses, plan.blocks)
        sets = {"movies": plan.movie_eval, **{b.domain: b.eval_records for b in plan.blocks[1:]}}
        accuracy_table: dict[int, dict[str, float]] = {}
        for v in tqdm(ModelStore(data_dir).versions(), desc="evaluate champions and challengers", unit="version"):
            ensemble = load_version(data_dir, v, args.members)
            accuracy_table[v] = {name: accuracy(ensemble, rs) for name, rs in sets.items()}
        detections = detections_from_log(daemon_log)
        analysis = analyse(plan, streamer, detections, accuracy_table, args.period)

    promotions, previous = [], streamer.samples[0]["champion"]
    for s in streamer.samples:
        if s["champion"] and s["champion"] != previous:
            promotions.append({"position": s["stored"], "version": s["champion"]})
            previous = s["champion"]
    runs = {key.split("{")[1].rstrip("}"): int(v) for key, v in final.items() if key.startswith("sentiloop_retrain_runs_total{") and v}
    results: dict[str, Any] = {
        "benchmark": "drift",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "args": plain_args(args),
        "bootstrap": {"version": version, "seconds": bootstrap_s, "movie_sentences": len(plan.champion_records)},
        "calibration": asdict(calibration),
        "thresholds": {"label_shift": calibration.label_threshold, "oov_rate": calibration.oov_baseline + calibration.oov_margin,
                       "error_rate": None,
                       "page_hinkley": calibration.ph_threshold},
        "blocks": [{"domain": b.domain, "start": b.start, "events": len(b.records), "eval_sentences": len(b.eval_records)} for b in plan.blocks],
        "detections": detections,
        "daemon_log": [line for line in daemon_log.splitlines() if LOG_KEEP.search(line)],
        "promotions": promotions,
        "pauses_for_retrains": streamer.pauses,
        "retrains": retrains,
        "retrain_runs": {"by_label": runs, "total": sum(runs.values()),
                         "promoted": sum(v for k, v in runs.items() if 'status="promoted"' in k),
                         "rejected": sum(v for k, v in runs.items() if 'status="rejected"' in k)},
        "accuracy_by_version": {str(v): row for v, row in accuracy_table.items()},
        "analysis": analysis,
        "samples": streamer.samples,
    }
    shifts = analysis["shifts"]
    results["targets"] = {
        "delay_max": TARGET_DELAY, "forgetting_max": TARGET_FORGETTING, "gain_min": TARGET_GAIN,
        "no_false_alarm_met": not analysis["false_alarms"],
        "delay_met": all(s["delay"] is not None and s["delay"] <= TARGET_DELAY for s in shifts),
        "forgetting_met": all(s["old_before"] - s["old_after"] <= TARGET_FORGETTING for s in shifts),
        "new_domain_up_met": all(s["new_after"] > s["new_before"] for s in shifts),
        "promoted_gain_met": all(s["champion_after"] != s["champion_before"] and s["new_after"] - s["new_before"] >= TARGET_GAIN
                                 for s in shifts),
    }
    results["total_seconds"] = time.perf_counter() - started
    print_report(results)
    print(OMP_NOTE)
    plot(results, args.plot)
    write_json(args.out, results)
    print(f"results written to {args.out}, plot to {args.plot} (whole run {results['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
