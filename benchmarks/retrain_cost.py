"""Retrain cost: the strategic retrain vs retraining every member from scratch (``full``), same new data.

The seed claims its per-member strategies (dictionary update, LSTM transfer, BiLSTM partial retrain,
BERT fine-tune) give most of a full retrain's gain for a fraction of its compute. This measures it,
both modes in one run, on identical inputs:

  1. bootstrap  one champion with ``train_ensemble`` on the VADER sentences of --bootstrap-domains only
                (default: movies), so feedback from another domain brings a real gain;
  2. feedback   --new-events labelled events of --new-domain (default: tweets), taken from the shared
                split's *train* part, appended to the buffer as the consumer would (10 % of them land
                in the recent holdout by event-id hash, as in production), and scored by the champion
                as the daemon's drift monitor scores them (kept per champion version for the retrain;
                timed apart, as the serving side's work);
  3. retrain    the data dir is copied once per mode and ``run_retrain(mode=...)`` runs on each copy:
                same champion, same buffer, same pools, same seeds. MLflow is off (its 3-9 s per run is
                not retraining). ``retrain.max_iterations`` is --max-iterations (default 1: one
                refine → retrain → evaluate pass per mode, so the cost ratio is per pass);
  4. evaluate   champion and both challengers on the new domain's *test* part of the shared split
                (never trained on), on the bootstrap domains' test part (forgetting), and the gate's
                own metrics (recent holdout, golden set).

--profile (default fast) is the training budget of the bootstrap AND of both retrains (members'
epochs/steps); with ``fast`` BERT gets the same 80-step cap in both modes (``models.bert.fine_tune_max_steps``),
so the comparison is per equal step budget; ``full`` uses the library defaults (BERT full fit 3 epochs,
strategic fine-tune up to 5). A full retrain trains every member from scratch on all the old data and the
new; the strategic one warm-starts on the new data and a replay sample.

Targets (seed, issue 11): strategic CPU time <= 30 % of full (">= 70 % less compute"; wall time is
reported too, but on a shared machine it also measures the neighbours), per member too; strategic
gain on the new domain >= 90 % of the full gain; the strategic challenger within 1 point of the
champion on the bootstrap domain (forgetting). Also reported: within 0.5 point of full on the new domain.

Run from the repository root:  .venv/bin/python benchmarks/retrain_cost.py [--members word_sentiment lstm] ...
Prints a table and writes JSON (default benchmarks/results/retrain_cost.json).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see _common.OMP_NOTE
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no per-load weight report in the output

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks._common import (
    DEFAULT_DATASETS,
    MEMBERS,
    OMP_NOTE,
    RESULTS_DIR,
    accuracy,
    bench_config,
    bootstrap_champion,
    by_domain,
    configure_threads,
    deep_merge,
    load_note,
    load_version,
    machine_info,
    plain_args,
    print_table,
    profile_overrides,
    shuffled,
    vader_records,
    verdict,
    write_json,
)
from sentiloop.config import Settings
from sentiloop.datasets import VADER_DOMAINS, Record, split_dataset
from sentiloop.retrainers.results import RECENT, RetrainStatus, RetrainSummary
from sentiloop.retrainers.strategies import Mode

RESULTS = RESULTS_DIR / "retrain_cost.json"
MODES: tuple[Mode, ...] = ("strategic", "full")
TARGET_TIME_RATIO = 0.30  # strategic / full wall time: ">= 70 % less compute"
TARGET_GAIN_SHARE = 0.90  # strategic gain / full gain
TARGET_ACC_GAP = 0.005  # full - strategic accuracy on the new domain, at most half a point
TARGET_FORGETTING = 0.01  # strategic challenger's bootstrap-domain accuracy at most a point below the champion's

log = logging.getLogger("benchmarks.retrain_cost")


def settings_for(data_dir: Path, args: argparse.Namespace) -> Settings:
    """Library defaults, except the members, no MLflow, the profile's budget and the iteration count."""
    overrides = deep_merge(profile_overrides(data_dir, args.members, args.profile), {"retrain": {"max_iterations": args.max_iterations}})
    return Settings.model_validate(bench_config(data_dir, args.members, overrides))


def feed_buffer(settings: Settings, records: Sequence[Record]) -> dict[str, int]:
    """Append the feedback in poll-sized batches, exactly as the consumer stores it (split by event-id hash)."""
    from sentiloop.buffer import SourcedEvent, SQLiteBufferStore
    from sentiloop.events import FeedbackEvent

    store = SQLiteBufferStore.for_settings(settings)
    try:
        now_ms = int(time.time() * 1000)
        for start in range(0, len(records), 500):
            store.append_batch([
                SourcedEvent(FeedbackEvent(event_id=f"fb-{r.id}", text=r.text, label=r.label, predicted_label=None,
                                           model_version=None, domain=r.domain, lang="en", ts_ms=now_ms), "bench.feedback", 0, offset)
                for offset, r in enumerate(records[start : start + 500], start)
            ])
        stats = store.stats()
    finally:
        store.close()
    return {"events": stats.events_stored, "labelled": stats.events_labelled}


def daemon_scoring(settings: Settings, version: int, records: Sequence[Record]) -> dict[str, float]:
    """What the daemon's drift monitor does as the feedback arrives: the champion scores every labelled
    event, and the scores are kept for the retrain (:mod:`sentiloop.models.scores`). Timed apart: it is
    the serving side's work, done whether or not a retrain ever runs."""
    from sentiloop.models.scores import ScoreStore

    champion = load_version(settings.data_dir, version, settings.models.enabled)
    scores = ScoreStore.for_settings(settings)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        for start in range(0, len(records), 256):
            texts = [r.text for r in records[start : start + 256]]
            scores.put(version, texts, champion.predict_proba(texts))
    finally:
        scores.close()
    return {"texts": len(records), "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


@contextmanager
def member_cpu_clock() -> Iterator[dict[str, float]]:
    """Process CPU seconds (all threads) per member: the cycle's ``retrain_member``, wrapped, unchanged.

    Wall time is what the issue asks for, but on a shared machine it also measures the neighbours;
    CPU time is the compute the retrain itself used.
    """
    from sentiloop.retrainers import cycle

    original = cycle.retrain_member
    spent: dict[str, float] = {}

    def timed(name: str, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original(name, *args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - started

    cycle.retrain_member = timed
    try:
        yield spent
    finally:
        cycle.retrain_member = original


@dataclass
class ModeRun:
    """One mode's retrain: its summary, what it cost (wall and CPU seconds, per member) and the challenger's accuracy."""

    data_dir: Path
    wall_s: float
    cpu_s: float
    member_s: dict[str, float]
    member_cpu_s: dict[str, float]
    loadavg_1m: list[float]
    summary: RetrainSummary
    accuracy: dict[str, float] = field(default_factory=dict)  # evaluation set → challenger accuracy

    @property
    def other_s(self) -> float:
        return self.wall_s - sum(self.member_s.values())

    @property
    def other_cpu_s(self) -> float:
        return self.cpu_s - sum(self.member_cpu_s.values())

    @property
    def version(self) -> int:
        assert self.summary.version is not None  # run_mode only keeps runs that trained a challenger
        return self.summary.version

    def record(self) -> dict[str, Any]:
        """The results file's form of the run."""
        return {"data_dir": str(self.data_dir), "wall_s": self.wall_s, "cpu_s": self.cpu_s, "member_s": self.member_s,
                "member_cpu_s": self.member_cpu_s, "other_s": self.other_s, "other_cpu_s": self.other_cpu_s,
                "loadavg_1m": self.loadavg_1m, "summary": self.summary.record(), "accuracy": self.accuracy}


def run_mode(base: Path, root: Path, mode: Mode, args: argparse.Namespace) -> ModeRun:
    """One retrain on a fresh copy of the prepared data dir; wall and CPU time around ``run_retrain``."""
    from sentiloop.retrainers.run import run_retrain

    data_dir = root / mode
    shutil.copytree(base, data_dir)
    settings = settings_for(data_dir, args)
    load_before = os.getloadavg()[0]
    with member_cpu_clock() as member_cpu:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = run_retrain(settings, "manual", f"benchmark: {mode} retrain", mode=mode, force=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.status not in (RetrainStatus.PROMOTED, RetrainStatus.REJECTED):
        raise RuntimeError(f"the {mode} retrain did not run: {summary.to_json(indent=None)}")
    members: dict[str, float] = {}
    for iteration in summary.iterations:
        for name, seconds in iteration.durations.items():
            members[name] = members.get(name, 0.0) + seconds
    return ModeRun(data_dir, wall, cpu, members, member_cpu, [round(load_before, 2), round(os.getloadavg()[0], 2)], summary)


def evaluate(data_dir: Path, version: int, members: Sequence[str], sets: dict[str, list[Record]]) -> dict[str, float]:
    ensemble = load_version(data_dir, version, members)
    return {name: accuracy(ensemble, records) for name, records in sets.items()}


def gate_recent_gain(run: ModeRun) -> float:
    """The gate's recent-holdout accuracy gain of the run's challenger over the champion."""
    gate = run.summary.gate_metrics
    return gate.gain(RECENT) if gate is not None else float("nan")


def compare(runs: dict[str, ModeRun], champion: dict[str, float]) -> dict[str, Any]:
    """Ratios and differences the targets are judged on (same run, same machine)."""
    s, f = runs["strategic"], runs["full"]
    gains = {mode: {key: run.accuracy[key] - champion[key] for key in champion} for mode, run in runs.items()}
    recent_gain = {mode: gate_recent_gain(run) for mode, run in runs.items()}
    full_gain = gains["full"]["new_domain_test"]
    share = gains["strategic"]["new_domain_test"] / full_gain if full_gain > 0 else None
    return {
        "time_ratio": s.wall_s / f.wall_s,
        "training_time_ratio": sum(s.member_s.values()) / sum(f.member_s.values()),
        "cpu_ratio": s.cpu_s / f.cpu_s,
        "member_time_ratio": {m: s.member_s[m] / f.member_s[m] for m in f.member_s if f.member_s[m] > 0},
        "member_cpu_ratio": {m: s.member_cpu_s[m] / f.member_cpu_s[m] for m in f.member_cpu_s if f.member_cpu_s[m] > 0},
        "gain": gains,
        "recent_holdout_gain": recent_gain,
        "gain_share": share,
        "recent_gain_share": recent_gain["strategic"] / recent_gain["full"] if recent_gain["full"] > 0 else None,
        "accuracy_gap": f.accuracy["new_domain_test"] - s.accuracy["new_domain_test"],
    }


def golden_change(run: ModeRun, pct: Callable[[float], str]) -> str:
    gate = run.summary.gate_metrics
    return f"{pct(gate.of('champion', 'golden'))} → {pct(gate.of('challenger', 'golden'))}" if gate is not None else ""


def print_report(results: dict[str, Any], runs: dict[str, ModeRun]) -> None:
    c, champ = results["comparison"], results["champion_accuracy"]
    s, f = runs["strategic"], runs["full"]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    signed = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    def both(wall_s: float, cpu_s: float) -> str:
        return f"{wall_s:.1f} / {cpu_s:.1f}"

    rows = [
        ["wall time, whole retrain (s)", f"{s.wall_s:.1f}", f"{f.wall_s:.1f}", f"{c['time_ratio']:.2f}",
         f"<= {TARGET_TIME_RATIO:.2f}", verdict(c["time_ratio"] <= TARGET_TIME_RATIO)],
        ["CPU time, whole retrain (s; compute, robust to neighbours)", f"{s.cpu_s:.1f}", f"{f.cpu_s:.1f}",
         f"{c['cpu_ratio']:.2f}", f"<= {TARGET_TIME_RATIO:.2f}", verdict(c["cpu_ratio"] <= TARGET_TIME_RATIO)],
    ]
    for member in f.member_s:
        rows.append([f"  {member}: {s.summary.iterations[0].strategies[member]} vs full (wall / CPU s)",
                     both(s.member_s[member], s.member_cpu_s[member]), both(f.member_s[member], f.member_cpu_s[member]),
                     f"{c['member_time_ratio'].get(member, float('nan')):.2f} / {c['member_cpu_ratio'].get(member, float('nan')):.2f}", "", ""])
    rows.append(["  the same work in both: pools, refinement, weights, evaluation, gate", both(s.other_s, s.other_cpu_s),
                 both(f.other_s, f.other_cpu_s), "", "", ""])
    domain = results["args"]["new_domain"]
    rows += [
        [f"accuracy, {domain} test (champion {pct(champ['new_domain_test'])}) (%)", pct(s.accuracy["new_domain_test"]),
         pct(f.accuracy["new_domain_test"]), f"gap {100 * c['accuracy_gap']:+.2f} pt", f"<= {100 * TARGET_ACC_GAP:.1f} pt",
         verdict(c["accuracy_gap"] <= TARGET_ACC_GAP)],
        [f"gain on {domain} test vs champion (pt)", signed(c["gain"]["strategic"]["new_domain_test"]),
         signed(c["gain"]["full"]["new_domain_test"]),
         "share n/a" if c["gain_share"] is None else f"share {c['gain_share']:.2f}", f">= {TARGET_GAIN_SHARE:.2f}",
         verdict(None if c["gain_share"] is None else c["gain_share"] >= TARGET_GAIN_SHARE)],
        ["gain on the recent holdout (gate) (pt)", signed(c["recent_holdout_gain"]["strategic"]), signed(c["recent_holdout_gain"]["full"]),
         "share n/a" if c["recent_gain_share"] is None else f"share {c['recent_gain_share']:.2f}", "", ""],
        [f"bootstrap-domain test (champion {pct(champ['old_domain_test'])}) (%)", pct(s.accuracy["old_domain_test"]),
         pct(f.accuracy["old_domain_test"]), f"strategic {signed(c['gain']['strategic']['old_domain_test'])} pt",
         f">= {-100 * TARGET_FORGETTING:+.1f} pt", verdict(c["gain"]["strategic"]["old_domain_test"] >= -TARGET_FORGETTING)],
        ["golden set, gate (champion → challenger) (%)",
         golden_change(s, pct), golden_change(f, pct),
         "", "", ""],
        ["gate verdict", s.summary.status.value, f.summary.status.value, "", "", ""],
    ]
    a, m = results["args"], results["machine"]
    print_table(
        f"sentiloop retrain cost — members {', '.join(a['members'])}; profile {a['profile']}; max_iterations {a['max_iterations']}; "
        f"{results['buffer']['events']} new {domain} events (bootstrap on {', '.join(a['bootstrap_domains'])}); "
        f"{m['cpus_usable']} CPUs, torch {m['torch_threads']} threads",
        ["", "strategic", "full", "ratio / diff", "target", "verdict"], rows,
    )
    d = results["daemon_side_scoring"]
    print(f"not in either run: the daemon's drift monitor scored the {d['texts']} feedback texts as they arrived "
          f"({d['wall_s']:.1f} s wall / {d['cpu_s']:.1f} s CPU); both runs read those scores")
    if note := load_note(m):
        print(note + f" (1-min load at start/end: strategic {s.loadavg_1m}, full {f.loadavg_1m})")
    for mode in MODES:
        reasons = runs[mode].summary.gate_reasons
        if reasons:
            print(f"{mode} challenger refused by the gate: " + "; ".join(reasons))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/retrain_cost.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", choices=MEMBERS, default=list(MEMBERS),
                        help="ensemble members (default: all four; e.g. --members word_sentiment lstm for a quick run)")
    parser.add_argument("--profile", choices=("fast", "full"), default="fast",
                        help="training budget of the bootstrap and of both retrains (default: %(default)s)")
    parser.add_argument("--bootstrap-domains", nargs="+", choices=VADER_DOMAINS, default=["movies"],
                        help="VADER domains the champion is trained on (default: %(default)s)")
    parser.add_argument("--new-domain", choices=VADER_DOMAINS, default="tweets", help="domain of the new feedback (default: %(default)s)")
    parser.add_argument("--new-events", type=int, default=3000,
                        help="labelled feedback events put in the buffer, from the new domain's train part (default: %(default)s)")
    parser.add_argument("--max-iterations", type=int, default=1, help="retrain.max_iterations for both modes (default: %(default)s)")
    parser.add_argument("--order", choices=("strategic-first", "full-first"), default="strategic-first",
                        help="which mode runs first (default: %(default)s)")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS,
                        help="a `datasets` folder holding vader_gt/ (default: ./sentiloop-data/datasets from `sentiloop data fetch`)")
    parser.add_argument("--workdir", type=Path, help="keep the data dirs here instead of a temporary directory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file (default: benchmarks/results/retrain_cost.json)")
    parser.add_argument("--verbose", action="store_true", help="log the retrain cycle's progress (INFO)")
    args = parser.parse_args(argv)
    if args.new_domain in args.bootstrap_domains:
        parser.error("--new-domain must not be one of --bootstrap-domains: the point is feedback the champion has not seen")
    if args.new_events < 1 or args.max_iterations < 1:
        parser.error("--new-events and --max-iterations must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    records = vader_records(args.datasets)
    split = split_dataset(records)  # the library's shared split: its test part is never trained on
    domains = by_domain(records)
    available = [r for r in split.train if r.domain == args.new_domain]
    if len(available) < args.new_events:
        raise SystemExit(f"--new-events {args.new_events}: the {args.new_domain} train part has only {len(available)} sentences")
    if args.new_events < 2000:
        print(f"note: --new-events {args.new_events} < 2,000, the size the issue asks for")
    feedback = shuffled(available, "retrain-cost")[: args.new_events]
    bootstrap_records = [r for d in args.bootstrap_domains for r in domains[d]]
    sets = {"new_domain_test": [r for r in split.test if r.domain == args.new_domain],
            "old_domain_test": [r for r in split.test if r.domain in args.bootstrap_domains]}

    with tempfile.TemporaryDirectory(prefix="sentiloop-retrain-cost-") as tmp:
        root = args.workdir or Path(tmp)
        if args.workdir:
            shutil.rmtree(root / "prepared", ignore_errors=True)
            for mode in MODES:
                shutil.rmtree(root / mode, ignore_errors=True)
        base = root / "prepared"
        settings = settings_for(base, args)
        configure_threads(settings.models.threads)
        order = MODES if args.order == "strategic-first" else MODES[::-1]
        runs: dict[str, ModeRun] = {}
        with tqdm(total=3 + len(order), desc="retrain cost", unit="phase") as bar:
            bar.set_postfix_str(f"bootstrap ({', '.join(args.members)}; {args.profile})")
            # Files the champion trains from live outside the copied data dirs, so every copy reads the same one.
            version, bootstrap_s = bootstrap_champion(settings, bootstrap_records, args.profile, root / "bootstrap.jsonl")
            bar.update()
            bar.set_postfix_str("champion on the evaluation sets")
            champion = evaluate(base, version, args.members, sets)  # also loads torch & co. before any timing
            buffer = feed_buffer(settings, feedback)
            daemon_side = daemon_scoring(settings, version, feedback)
            bar.update()
            for mode in order:
                bar.set_postfix_str(f"{mode} retrain")
                runs[mode] = run_mode(base, root, mode, args)
                bar.update()
            bar.set_postfix_str("challengers on the evaluation sets")
            for run in runs.values():
                run.accuracy = evaluate(run.data_dir, run.version, args.members, sets)
            bar.update()

    results: dict[str, Any] = {
        "benchmark": "retrain_cost",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "args": plain_args(args),
        "bootstrap": {"version": version, "seconds": bootstrap_s, "records": len(bootstrap_records)},
        "buffer": buffer,
        "daemon_side_scoring": daemon_side,
        "evaluation_sets": {name: len(rs) for name, rs in sets.items()},
        "champion_accuracy": champion,
        "runs": {mode: runs[mode].record() for mode in MODES},
        "targets": {"time_ratio_max": TARGET_TIME_RATIO, "gain_share_min": TARGET_GAIN_SHARE, "accuracy_gap_max": TARGET_ACC_GAP},
    }
    results["comparison"] = c = compare(runs, champion)
    results["targets"].update(forgetting_max=TARGET_FORGETTING,
                              forgetting_met=c["gain"]["strategic"]["old_domain_test"] >= -TARGET_FORGETTING,
                              time_ratio_met=c["time_ratio"] <= TARGET_TIME_RATIO, cpu_ratio_met=c["cpu_ratio"] <= TARGET_TIME_RATIO,
                              gain_share_met=c["gain_share"] is not None and c["gain_share"] >= TARGET_GAIN_SHARE,
                              accuracy_gap_met=c["accuracy_gap"] <= TARGET_ACC_GAP)
    results["total_seconds"] = time.perf_counter() - started
    print_report(results, runs)
    print(OMP_NOTE)
    write_json(args.out, results)
    print(f"results written to {args.out} (whole run {results['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
