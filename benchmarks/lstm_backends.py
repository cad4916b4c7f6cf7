"""The LSTM member in torch and in Keras: same split, same hyper-parameters, one run.

  1. data      the shared split `sentiloop train` uses (VADER ground truth, 5 classes; train / validation / test)
  2. train     each backend's LSTM member from scratch with the library defaults (models.lstm: the seed's
               he_normal, Adam 1e-2 × 0.96 every 100 steps, dropout 0.3, MiniLM word vectors, early stopping)
  3. retrain   each one's seed "transfer" warm start on --new-domain sentences of the training split
  4. report    test accuracy, training / retrain / prediction time, and what each backend costs to have:
               its installed size and the time a fresh interpreter takes to import it

Needs the tensorflow extra (a venv with both): run from the repository root
  .venv-tf/bin/python benchmarks/lstm_backends.py [--threads 2] [--out benchmarks/results/lstm_backends.json]
Prints a table and writes JSON; the keras/torch ratios are the numbers to compare across machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from importlib import metadata, util
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DEFAULT_DATASETS, RESULTS_DIR, configure_threads, load_note, machine_info, print_table, write_json
from sentiloop.config import RetrainConfig, Settings
from sentiloop.models.base import Member, TrainData, WarmStart, WarmStartable
from sentiloop.models.registry import spec_for
from sentiloop.training import as_train_data, load_split

BACKENDS = ("torch", "keras")
IMPORTS = {"torch": "import torch", "keras": "import tensorflow, keras"}
PACKAGES = {"torch": ("torch",), "keras": ("tensorflow", "keras")}  # import names
DISTRIBUTIONS = {"torch": ("torch",), "keras": ("tensorflow-cpu", "keras")}


def import_seconds(statement: str, runs: int = 3) -> float:
    """The best of ``runs`` fresh interpreters importing the framework (the page cache is warm after the first)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def installed_mb(packages: tuple[str, ...]) -> float:
    """The size on disk of the packages' directories in this venv."""
    total = 0
    for package in packages:
        spec = util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        total += sum(path.stat().st_size for path in Path(spec.origin).parent.rglob("*") if path.is_file())
    return total / 2**20


def accuracy(member: Member, data: TrainData) -> float:
    return float((member.predict_proba(data.texts).argmax(axis=1) == data.labels).mean())


def domain_rows(data: TrainData, domain: str) -> TrainData:
    rows = [i for i, d in enumerate(data.domains or []) if d == domain]
    return TrainData([data.texts[i] for i in rows], data.labels[rows], domains=[domain] * len(rows))


def run_backend(backend: str, settings: Settings, train: TrainData, validation: TrainData, test: TrainData,
                new: TrainData, backups: Path) -> dict[str, Any]:
    models = settings.models.model_copy(update={"lstm": settings.models.lstm.model_copy(update={"backend": backend})})
    member = spec_for("lstm").build(settings, models)
    started = time.perf_counter()
    report = member.fit(train, validation)
    trained_s = time.perf_counter() - started
    started = time.perf_counter()
    test_accuracy = accuracy(member, test)
    predict_s = time.perf_counter() - started
    budget = WarmStart(RetrainConfig(), iteration=1, backup_dir=backups / backend)
    started = time.perf_counter()
    assert isinstance(member, WarmStartable)
    challenger, retrain_report = member.warm_start(new, validation, budget)
    retrain_s = time.perf_counter() - started
    return {
        "kind": member.kind, "epochs": report.epochs, "stopped": report.stopped, "train_s": round(trained_s, 1),
        "test_accuracy": round(test_accuracy, 4), "predict_texts_per_s": round(len(test) / predict_s),
        "retrain_epochs": retrain_report.epochs, "retrain_s": round(retrain_s, 1),
        "retrained_test_accuracy": round(accuracy(challenger, test), 4),
        "import_s": round(import_seconds(IMPORTS[backend]), 2), "installed_mb": round(installed_mb(PACKAGES[backend])),
        "versions": {name: metadata.version(name) for name in DISTRIBUTIONS[backend]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="folder holding vader_gt/ (`sentiloop data fetch`)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both frameworks (models.threads)")
    parser.add_argument("--new-domain", default="tweets", help="the training split's domain a retrain learns from")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "lstm_backends.json")
    args = parser.parse_args(argv)
    if util.find_spec("tensorflow") is None:
        raise SystemExit("needs the tensorflow extra: python3 -m venv .venv-tf && .venv-tf/bin/pip install -c constraints.txt -e '.[dev,tensorflow]'")
    configure_threads(args.threads)
    settings = Settings.model_validate({"data_dir": str(args.datasets.resolve().parent), "mlflow": {"enabled": False}})
    split = load_split(settings, fetch=False)
    train, validation, test = (as_train_data(part) for part in (split.train, split.validation, split.test))
    new = domain_rows(train, args.new_domain)
    print(f"split: {len(train)} train / {len(validation)} validation / {len(test)} test; retrain on {len(new)} {args.new_domain} sentences")
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                               "config": settings.models.lstm.model_dump(mode="json", exclude={"backend", "keras"})}
    with tempfile.TemporaryDirectory(prefix="sentiloop-lstm-") as backups:
        for backend in BACKENDS:
            print(f"training the {backend} LSTM …", flush=True)
            results[backend] = run_backend(backend, settings, train, validation, test, new, Path(backups))
    torch_run, keras_run = results["torch"], results["keras"]
    results["ratios"] = {key: round(keras_run[key] / torch_run[key], 2)
                         for key in ("train_s", "retrain_s", "predict_texts_per_s", "import_s", "installed_mb")}
    results["machine"] = machine_info()
    header = ["backend", "test acc", "train s", "epochs", "retrain s", "acc after retrain", "predict texts/s", "import s", "installed MB"]
    rows = [[backend, f"{r['test_accuracy']:.3f}", f"{r['train_s']:.0f}", str(r["epochs"]), f"{r['retrain_s']:.0f}",
             f"{r['retrained_test_accuracy']:.3f}", f"{r['predict_texts_per_s']:,}", f"{r['import_s']:.1f}", f"{r['installed_mb']:,}"]
            for backend, r in ((b, results[b]) for b in BACKENDS)]
    ratio = results["ratios"]
    rows.append(["keras / torch", f"{keras_run['test_accuracy'] - torch_run['test_accuracy']:+.3f}", f"{ratio['train_s']:.2f}x", "",
                 f"{ratio['retrain_s']:.2f}x", "", f"{ratio['predict_texts_per_s']:.2f}x", f"{ratio['import_s']:.2f}x", f"{ratio['installed_mb']:.2f}x"])
    print_table(f"LSTM member, torch vs Keras ({args.threads} threads, same split and hyper-parameters)", header, rows)
    if note := load_note(results["machine"]):
        print(note)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
