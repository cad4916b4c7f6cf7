"""Drift monitoring off the poll loop: the champion scores labelled events in a background thread.

The consumer only enqueues (never blocks: a full queue drops the event from *monitoring*, counted;
it is still stored). The thread scores batches with the champion (keeping the scores for the retrain
worker, :mod:`sentiloop.models.scores`), feeds the detectors, and latches
fired signals until the retrain controller consumes them (then the detectors are reset, so a flag is
never stuck). ``swap`` replaces the champion atomically and re-baselines every detector.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from sentiloop.config import DriftConfig
from sentiloop.events import FeedbackEvent
from sentiloop.models.base import HasVocabulary
from sentiloop.models.registry import in_training_order
from sentiloop.models.scores import ScoreStore
from sentiloop.models.tokenize import Tokenizer
from sentiloop.monitoring.drift import ErrorRateDrift, LabelShiftDrift, OOVRateDrift, Signal

log = logging.getLogger(__name__)
ACCURACY_WINDOW = 500


def champion_vocabulary(ensemble: Any) -> tuple[Tokenizer, set[str]] | None:
    """The tokenizer the champion's vocabulary members share, and every word they know.

    A word only counts as known in the tokenizer that produced it (Kiwi morphemes are not regex
    words), so the OOV signal uses the tokenizer most of those members use (ties: training order)
    and the union of their vocabularies. None when no member has a vocabulary (e.g. BERT alone).
    """
    members = [ensemble.members[name] for name in in_training_order(list(ensemble.members))]
    with_vocabulary = [m for m in members if isinstance(m, HasVocabulary) and m.known_words()]
    if not with_vocabulary:
        return None
    names = [m.tokenizer_name for m in with_vocabulary]
    chosen = max(dict.fromkeys(names), key=names.count)  # first in training order wins a tie
    sharing = [m for m in with_vocabulary if m.tokenizer_name == chosen]
    return sharing[0].tokenize, {word for m in sharing for word in m.known_words()}


class DriftMonitor:
    def __init__(self, config: DriftConfig, num_classes: int, metrics: Any, queue_size: int = 100_000,
                 scores: ScoreStore | None = None) -> None:
        self.config = config
        self.num_classes = num_classes
        self.metrics = metrics
        self.scores = scores
        self.reference_texts: list[str] = []
        self.reference: np.ndarray | None = None
        self.queue: queue.Queue[FeedbackEvent] = queue.Queue(maxsize=queue_size)
        self.lock = threading.Lock()
        self.champion: Any | None = None
        self.champion_version: int | None = None
        self.latched: dict[str, Signal] = {}
        self.scored = 0
        self.correct: deque[int] = deque(maxlen=ACCURACY_WINDOW)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentiloop-drift", daemon=True)
        self._detectors_for(None)

    # -- champion ------------------------------------------------------------------------------
    def _detectors_for(self, champion: Any | None) -> None:
        c = self.config
        self.error = ErrorRateDrift(c.adwin_delta, c.ph_threshold, c.ph_delta, c.min_instances)
        self.labels = LabelShiftDrift(self.num_classes, self.reference, c.label_window, c.label_threshold)
        known = champion_vocabulary(champion) if champion is not None else None
        if known is None:
            self.oov = None
            return
        tokenize, vocabulary = known
        baseline = OOVRateDrift.rate(tokenize, vocabulary, self.reference_texts) if self.reference_texts else None
        self.oov = OOVRateDrift(tokenize, vocabulary, baseline, c.oov_window, c.oov_margin)

    def apply(self, config: DriftConfig) -> None:
        """New detector settings (config reload): detectors restart from the current baseline."""
        with self.lock:
            self.config = config
            self._detectors_for(self.champion)
            self.latched.clear()
        log.info("drift detectors re-created with the reloaded settings")

    def swap(self, champion: Any, version: int | None, reference_texts: Sequence[str] = (),
             reference_labels: Sequence[int] = ()) -> None:
        """Serve a new champion from now on; detectors start from a fresh baseline.

        ``reference_texts`` give the OOV baseline, ``reference_labels`` the label mix to compare with;
        without them the first full window of the stream is the reference.
        """
        reference = np.bincount(np.asarray(reference_labels, dtype=int), minlength=self.num_classes).astype(float)
        with self.lock:
            self.champion, self.champion_version = champion, version
            self.reference_texts = list(reference_texts)
            self.reference = reference if len(reference_labels) else None
            self._detectors_for(champion)
            self.latched.clear()
            self.correct.clear()
        log.info("drift monitor now watches champion v%s", version)

    # -- feeding -------------------------------------------------------------------------------
    def offer(self, events: Sequence[FeedbackEvent]) -> None:
        """Called on the poll thread: enqueue labelled events, never block (nothing with retrain.drift.enabled off)."""
        if not self.config.enabled:
            return
        for event in events:
            if event.label is None:
                continue
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                self.metrics.drift_dropped.inc()

    def start(self) -> DriftMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch and self.champion is not None:
                try:
                    self.process(batch)
                except Exception:  # a scoring failure must not kill monitoring
                    log.exception("drift monitor failed on a batch of %d events", len(batch))

    def _take_batch(self) -> list[FeedbackEvent]:
        try:
            batch = [self.queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        while len(batch) < self.config.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, batch: Sequence[FeedbackEvent]) -> None:
        """Score ``batch`` with the champion and update every detector (also callable directly)."""
        with self.lock:
            champion = self.champion
            assert champion is not None
            texts = [e.text for e in batch]
            probabilities = champion.predict_proba(texts)
            if self.scores is not None and self.champion_version is not None:  # a retrain of this champion reuses them
                self.scores.put(self.champion_version, texts, probabilities)
            for event, guess in zip(batch, probabilities.argmax(axis=1)):
                self._update(event, int(guess))

    def _update(self, event: FeedbackEvent, guess: int) -> None:
        assert event.label is not None
        wrong = guess != event.label
        self.scored += 1
        self.correct.append(0 if wrong else 1)
        signals = [self.error.update(wrong), self.labels.update(event.label)]
        if self.oov is not None:
            signals.append(self.oov.update(event.text))
        for signal in signals:
            self.metrics.drift_statistic.labels(signal=signal.name).set(signal.statistic)
            if signal.fired and signal.name not in self.latched:
                self.latched[signal.name] = signal
                self.metrics.drift_detected.labels(signal=signal.name).inc()
                log.warning("drift signal %s after %d scored events: %s", signal.name, self.scored, signal.reason)
        self.metrics.drift_statistic.labels(signal="page_hinkley").set(self.error.page_hinkley_statistic)
        self.metrics.drift_scored.inc()
        self.metrics.model_accuracy.labels(member="ensemble", split="stream").set(float(np.mean(self.correct)))

    # -- the controller's side -------------------------------------------------------------------
    def signals(self) -> list[Signal]:
        with self.lock:
            return list(self.latched.values())

    def reset(self, names: Sequence[str] | None = None) -> None:
        """Clear latched signals and restart their detectors (after a decision: no stuck flag)."""
        with self.lock:
            for name in list(names if names is not None else self.latched):
                self.latched.pop(name, None)
                detectors: dict[str, ErrorRateDrift | LabelShiftDrift | OOVRateDrift | None] = {
                    "error_rate": self.error, "label_shift": self.labels, "oov_rate": self.oov}
                detector = detectors.get(name)
                if detector is not None:
                    detector.reset()
