"""Drift monitoring off the poll loop: the champion scores traffic and labels in a background thread.

The consumer only enqueues (never blocks: a full queue drops the event from *monitoring*, counted;
it is still stored): every newly stored event as *traffic* (labelled or not: the label-free signals
of :mod:`sentiloop.monitoring.label_free`), and every label as it matures (a labelled event, a delayed
label, a correction: the error-rate and label-shift signals). The thread scores batches with the
champion (keeping the scores for the retrain worker, :mod:`sentiloop.models.scores`), feeds the
detectors, and latches
fired signals until the retrain controller consumes them (then the detectors are reset, so a flag is
never stuck). ``swap`` replaces the champion atomically and re-baselines every detector.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentiloop.config import DriftConfig
from sentiloop.events import FeedbackEvent
from sentiloop.models.base import HasVocabulary
from sentiloop.models.registry import in_training_order
from sentiloop.models.scores import ScoreStore
from sentiloop.models.tokenize import Tokenizer
from sentiloop.monitoring.drift import DriftReference, ErrorRateDrift, LabelShiftDrift, OOVRateDrift, Signal
from sentiloop.monitoring.label_free import Calibration, ConfidenceDrop, PerformanceEstimate, PredictionShiftDrift
from sentiloop.monitoring.shadow import ShadowReport, ShadowRun

log = logging.getLogger(__name__)
ACCURACY_WINDOW = 500


@dataclass(frozen=True)
class _GoldenBaseline:
    calibration: Calibration
    predicted: np.ndarray  # class counts the champion predicts on the golden set
    confidence: float  # its mean top-class probability there


Observed = tuple[FeedbackEvent, bool]  # an event, and whether it is traffic (just stored) rather than a matured label


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
        self.queue: queue.Queue[Observed] = queue.Queue(maxsize=queue_size)
        self.golden: _GoldenBaseline | None = None
        self.shadow: ShadowRun | None = None
        self.lock = threading.Lock()
        self.champion: Any | None = None
        self.champion_version: int | None = None
        self.latched: dict[str, Signal] = {}
        self.scored = 0  # labelled events scored (the policy's warm-up)
        self.traffic = 0  # traffic events scored
        self.correct: deque[int] = deque(maxlen=ACCURACY_WINDOW)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentiloop-drift", daemon=True)
        self._detectors_for(None)

    # -- champion ------------------------------------------------------------------------------
    def _detectors_for(self, champion: Any | None) -> None:
        c = self.config
        self.error = ErrorRateDrift(c.adwin_delta, c.ph_threshold, c.ph_delta, c.min_instances)
        self.labels = LabelShiftDrift(self.num_classes, self.reference, c.label_window, c.label_threshold)
        golden = self.golden
        self.predictions = PredictionShiftDrift(self.num_classes, golden.predicted if golden else None, c.prediction_window,
                                                c.prediction_threshold)
        self.confidence = ConfidenceDrop(golden.confidence if golden else None, c.prediction_window, c.confidence_margin)
        self.estimate = PerformanceEstimate(golden.calibration if golden else None, c.prediction_window, c.chunks_kept,
                                            recalibrate=c.recalibrate_labels)
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

    def swap(self, champion: Any, version: int | None, reference: DriftReference | None = None) -> None:
        """Serve a new champion from now on; detectors start from a fresh baseline.

        ``reference`` gives the OOV baseline, the label mix and the golden set; the golden set is
        scored here (on the caller's thread, before the switch) for the calibration, its ECE and the
        label-free baselines. Without one, the first full window of the stream is the reference.
        """
        reference = reference or DriftReference()
        labels = np.bincount(np.asarray(reference.labels, dtype=int), minlength=self.num_classes).astype(float)
        golden = self._golden_baseline(champion, reference) if reference.golden_texts else None
        with self.lock:
            self.champion, self.champion_version = champion, version
            self.reference_texts = list(reference.texts)
            self.reference = labels if len(reference.labels) else None
            self.golden = golden
            self.shadow = None  # a challenger in shadow was measured against the champion that just left
            self._detectors_for(champion)
            self.latched.clear()
            self.correct.clear()
        if golden is not None:
            self.metrics.champion_ece.set(golden.calibration.ece)
        log.info("drift monitor now watches champion v%s%s", version,
                 f" (golden-set ECE {golden.calibration.ece:.3f})" if golden is not None else "")

    def start_shadow(self, challenger: Any, version: int, reference: DriftReference, events: int, min_labels: int) -> None:
        """Score live traffic with ``challenger`` too, from now on, until ``events`` were seen (see ``shadow``)."""
        golden = self._golden_baseline(challenger, reference) if reference.golden_texts else None
        with self.lock:
            champion_calibration = self.golden.calibration if self.golden is not None else None
            self.shadow = ShadowRun(challenger, version, events, champion_calibration,
                                    golden.calibration if golden is not None else None, min_labels)
        self.metrics.shadow_running.set(1)
        log.info("challenger v%s scores live traffic in shadow for %d events", version, events)

    def shadow_done(self) -> bool:
        with self.lock:
            return self.shadow is not None and self.shadow.done

    def end_shadow(self) -> ShadowReport | None:
        """Stop the shadow run; its final report (None when none ran)."""
        with self.lock:
            shadow, self.shadow = self.shadow, None
        self.metrics.shadow_running.set(0)
        return shadow.report() if shadow is not None else None

    def _golden_baseline(self, champion: Any, reference: DriftReference) -> _GoldenBaseline:
        probabilities = np.asarray(champion.predict_proba(list(reference.golden_texts)))
        confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
        correct = (predicted == np.asarray(reference.golden_labels)).astype(float)
        return _GoldenBaseline(Calibration.fit(confidence, correct), np.bincount(predicted, minlength=self.num_classes).astype(float),
                               float(confidence.mean()))

    # -- feeding -------------------------------------------------------------------------------
    def offer(self, stored: Sequence[FeedbackEvent], labelled: Sequence[FeedbackEvent] = ()) -> None:
        """Called on the poll thread with one batch's newly ``stored`` events and the events ``labelled``
        by it (new labelled events, delayed labels, corrections); enqueues, never blocks."""
        if not self.config.enabled:
            return
        items: list[Observed] = []
        if self.config.label_free:
            items.extend((event, True) for event in stored)
        traffic = {event.event_id for event, _ in items}
        items.extend((event, False) for event in labelled if event.event_id not in traffic)
        for item in items:
            try:
                self.queue.put_nowait(item)
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

    def _take_batch(self) -> list[Observed]:
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

    def process(self, batch: Sequence[Observed]) -> None:
        """Score ``batch`` with the champion and update every detector (also callable directly)."""
        with self.lock:
            champion = self.champion
            assert champion is not None
            texts = [event.text for event, _ in batch]
            probabilities = np.asarray(champion.predict_proba(texts))
            if self.scores is not None and self.champion_version is not None:  # a retrain of this champion reuses them
                self.scores.put(self.champion_version, texts, probabilities)
            for (event, traffic), row in zip(batch, probabilities):
                guess = int(row.argmax())
                if traffic:
                    self._update_traffic(event, guess, float(row.max()))
                if event.label is not None:
                    self._update_labelled(event, guess)
            if self.shadow is not None:
                self._update_shadow(self.shadow, batch, probabilities)
            self._publish()

    def _update_shadow(self, shadow: ShadowRun, batch: Sequence[Observed], probabilities: np.ndarray) -> None:
        rows = [i for i, (_, traffic) in enumerate(batch) if traffic]
        shadow.observe([batch[i][0].event_id for i in rows], [batch[i][0].text for i in rows], probabilities[rows])
        for event, _ in batch:
            if event.label is not None:
                shadow.label(event.event_id, event.label)
        report = shadow.report()
        m = self.metrics
        m.shadow_events.set(report.events)
        m.shadow_agreement.set(report.agreement)
        for model in ("champion", "challenger"):
            m.shadow_accuracy.labels(model=model, kind="estimated").set(report.estimated[model])
            realised = report.realised[model]
            if realised is not None:
                m.shadow_accuracy.labels(model=model, kind="realised").set(realised)

    def _update_traffic(self, event: FeedbackEvent, guess: int, confidence: float) -> None:
        self.traffic += 1
        self.estimate.observe(event.event_id, confidence, guess)
        signals = [self.predictions.update(guess), self.confidence.update(confidence)]
        if self.oov is not None:
            signals.append(self.oov.update(event.text))
        self._latch(signals, self.traffic, "traffic")
        self.metrics.monitored.inc()

    def _update_labelled(self, event: FeedbackEvent, guess: int) -> None:
        assert event.label is not None
        wrong = guess != event.label
        self.scored += 1
        self.correct.append(0 if wrong else 1)
        self.estimate.label(event.event_id, event.label)
        signals = [self.error.update(wrong), self.labels.update(event.label)]
        if self.oov is not None and not self.config.label_free:  # with label-free monitoring it watches all traffic
            signals.append(self.oov.update(event.text))
        self._latch(signals, self.scored, "labelled")
        self.metrics.drift_scored.inc()

    def _latch(self, signals: Sequence[Signal], position: int, kind: str) -> None:
        for signal in signals:
            self.metrics.drift_statistic.labels(signal=signal.name).set(signal.statistic)
            if signal.fired and signal.name not in self.latched:
                self.latched[signal.name] = signal
                self.metrics.drift_detected.labels(signal=signal.name).inc()
                log.warning("drift signal %s after %d scored %s events: %s", signal.name, position, kind, signal.reason)

    def _publish(self) -> None:
        m = self.metrics
        m.drift_statistic.labels(signal="page_hinkley").set(self.error.page_hinkley_statistic)
        if self.correct:
            m.model_accuracy.labels(member="ensemble", split="stream").set(float(np.mean(self.correct)))
        estimated, compared = self.estimate.estimated, self.estimate.latest_compared()
        if estimated is not None:
            m.estimated_accuracy.set(estimated)
            m.prediction_confidence.set(float(np.mean(self.confidence.recent)) if self.confidence.recent else 0.0)
        if compared is not None:
            realised, expected = compared.realised(self.estimate.min_labels), compared.estimated
            assert realised is not None and expected is not None
            m.realised_accuracy.set(realised)
            m.estimation_error.set(expected - realised)

    def label_free_status(self) -> dict[str, Any]:
        """For GET /v1/status: the estimate next to what the matured labels say, and the calibration."""
        with self.lock:
            golden = self.golden
            compared = self.estimate.latest_compared()
            return {"traffic_scored": self.traffic, "labelled_scored": self.scored,
                    "estimated_accuracy": self.estimate.estimated, "window": self.config.prediction_window,
                    "realised_accuracy": compared.realised(self.estimate.min_labels) if compared is not None else None,
                    "compared_chunk": compared.as_dict(self.estimate.min_labels) if compared is not None else None,
                    "chunks": self.estimate.report(),
                    "golden_ece": golden.calibration.ece if golden is not None else None,
                    "shadow": self.shadow.report().as_dict() if self.shadow is not None else None}

    # -- the controller's side -------------------------------------------------------------------
    def signals(self) -> list[Signal]:
        with self.lock:
            return list(self.latched.values())

    def reset(self, names: Sequence[str] | None = None) -> None:
        """Clear latched signals and restart their detectors (after a decision: no stuck flag)."""
        with self.lock:
            for name in list(names if names is not None else self.latched):
                self.latched.pop(name, None)
                detectors: dict[str, ErrorRateDrift | LabelShiftDrift | OOVRateDrift | ConfidenceDrop | None] = {
                    "error_rate": self.error, "label_shift": self.labels, "oov_rate": self.oov,
                    "prediction_shift": self.predictions, "confidence_drop": self.confidence}
                detector = detectors.get(name)
                if detector is not None:
                    detector.reset()
