"""The monitor's one facade: feed it records, take metrics, alerts and health documents out.

:class:`Monitor` wires the pure parts together so the Faust agent only decodes, calls
and sends:

* ``on_labeled``: online metrics (:mod:`precog.monitor.metrics`) and concept drift;
* ``on_prediction``: label coverage, prediction drift, data drift on the leader's
  reference, outlier verdict for the prediction documents;
* ``on_event`` / ``on_dead_letter`` / ``on_manifest`` / ``on_lag``: pipeline health;
* ``tick(now)``: the metrics snapshot, the pipeline-health documents of closed windows,
  and every alert raised since the last tick.

Two clocks, both event time. The **watermark** is the largest event time of the events
topic (or the larger one a tick gives); the metrics' ``last_<T>`` window is measured at
``max(watermark, newest outcome_time)`` and never moves back, because a label it evicted
cannot come back. Health windows close on :class:`~precog.monitor.health.ClosingClock`:
the watermark, moved on at wall speed (``now``) while no record arrives, so the last
window of a stream becomes final; a late record re-opens a window and its document is
rewritten complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from precog.monitor.alerts import make_alert
from precog.monitor.drift import (
    PSI_THRESHOLD,
    ConceptDrift,
    PSIDrift,
    concept_drift_alert,
    psi_alert,
)
from precog.monitor.estimate import CalibrationWatch, EstimationBook
from precog.monitor.health import ClosingClock, WindowedCounts, health_doc, window_start
from precog.monitor.metrics import MetricsBook
from precog.monitor.outliers import OutlierDetector, OutlierResult
from precog.monitor.quality import QualityMonitor
from precog.monitor.reference import SCORE, Reference
from precog.monitor.volume import VolumeMonitor

ReferenceLookup = Callable[[str, int], Reference | None]


@dataclass(frozen=True)
class MonitorConfig:
    """Windows and thresholds (defaults documented in docs/monitoring.md)."""

    namespace: str
    volume_window_ms: int = 60_000
    min_ratio: float = 0.8
    volume_grace_ms: int = 60_000
    metrics_last_n: int = 1000
    metrics_last_ms: int = 3_600_000
    adwin_delta: float = 0.002
    psi_window: int = 1000
    psi_threshold: float = PSI_THRESHOLD
    outliers: bool = True
    lag_threshold: int | None = None
    estimate_window_ms: int = 3_600_000  # windows of the estimated / realised metrics
    estimate_keep_ms: int = 8 * 86_400_000  # the label window and a margin
    calibration_alpha: float = 0.01
    calibration_every: int = 1000  # labels of a model between two calibration checks
    calibration_last: int = 5000  # the check looks at this many newest labels


@dataclass
class TickOutput:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)


def _no_reference(model_id: str, version: int) -> Reference | None:
    return None


class Monitor:
    """All monitors of one namespace."""

    def __init__(self, config: MonitorConfig, references: ReferenceLookup = _no_reference) -> None:
        self.config = config
        self.references = references
        self.metrics = MetricsBook(config.metrics_last_n, config.metrics_last_ms)
        self.concept: dict[tuple[str, int], ConceptDrift] = {}
        self.score_drift: dict[tuple[str, int], PSIDrift] = {}
        self.data_drift: dict[tuple[str, int], PSIDrift] = {}
        self.outlier_detectors: dict[tuple[str, int], OutlierDetector | None] = {}
        self.volume = VolumeMonitor(config.volume_window_ms, config.min_ratio,
                                    grace_ms=config.volume_grace_ms)
        self.quality = QualityMonitor(config.volume_window_ms, config.volume_grace_ms)
        self.outlier_counts = WindowedCounts(config.volume_window_ms, config.volume_grace_ms)
        self.lags: dict[str, int] = {}
        self.pending_alerts: list[dict[str, Any]] = []
        self.watermark = 0
        self.now = 0
        self.records = 0  # records feeding health windows: events, predictions, DLQ, manifests
        self.closing_clock = ClosingClock()
        self.estimates = EstimationBook(config.estimate_window_ms, config.estimate_keep_ms)
        self.calibration: dict[tuple[str, int], CalibrationWatch] = {}

    # -- models --------------------------------------------------------------------
    def on_labeled(self, rec: dict[str, Any]) -> None:
        """One ``labeled.v1`` record: metrics and concept drift of its model."""
        self.metrics.observe_labeled(rec)
        key = (rec["model_id"], int(rec["version"]))
        detector = self.concept.setdefault(key, ConceptDrift(self.config.adwin_delta))
        det = detector.update(int(rec["label"] != rec["outcome"]))
        if det is not None:
            self.pending_alerts.append(concept_drift_alert(
                self.config.namespace, key[0], key[1], det, self.config.adwin_delta,
                int(rec["outcome_time"]), self.now, event_id=rec.get("event_id")))
        self.estimates.observe_labeled(rec)
        watch = self.calibration.setdefault(key, CalibrationWatch(
            self.config.calibration_last, self.config.calibration_every,
            self.config.calibration_alpha))
        alert = watch.observe(self.config.namespace, key, rec, self.now)
        if alert is not None:
            self.pending_alerts.append(alert)

    def _reference(self, key: tuple[str, int]) -> Reference | None:
        return self.references(*key)

    def on_prediction(self, pred: dict[str, Any]) -> OutlierResult | None:
        """One ``prediction.v1`` record: coverage, drift; returns the outlier verdict."""
        self.metrics.observe_prediction(pred)
        self.records += 1  # its outlier counts are health windows too
        t = int(pred["event_time"])
        for m in [pred["leader"], *pred.get("challengers", [])]:
            self._score_drift(m, t)
            self.estimates.observe_prediction(m["model_id"], int(m["version"]), str(m["role"]),
                                              t, float(m["score"]), float(m["threshold"]))
        leader = (pred["leader"]["model_id"], int(pred["leader"]["version"]))
        features = {f["name"]: float(f["value"]) for f in pred.get("features", [])}
        self._data_drift(leader, features, t, pred.get("source"))
        return self._outlier(leader, features, t, pred.get("source", ""))

    def _score_drift(self, m: dict[str, Any], t: int) -> None:
        key = (m["model_id"], int(m["version"]))
        if key not in self.score_drift:
            ref = self._reference(key)
            score_ref = {SCORE: ref[SCORE]} if ref is not None and SCORE in ref else None
            self.score_drift[key] = PSIDrift(score_ref, self.config.psi_window,
                                             self.config.psi_threshold, names=[SCORE])
        for res in self.score_drift[key].update({SCORE: float(m["score"])}, t):
            if res.drifted:
                self.pending_alerts.append(psi_alert(
                    self.config.namespace, "prediction_drift", res, self.config.psi_threshold,
                    self.config.psi_window, self.now, model_id=key[0], version=key[1]))

    def _data_drift(self, key: tuple[str, int], features: dict[str, float], t: int,
                    source: str | None) -> None:
        if key not in self.data_drift:
            ref = self._reference(key)
            feats = {n: ref[n] for n in ref.names if n != SCORE} if ref is not None else {}
            names = list(feats) or sorted(features)
            self.data_drift[key] = PSIDrift(feats, self.config.psi_window,
                                            self.config.psi_threshold, names=names)
        for res in self.data_drift[key].update(features, t):
            if res.drifted:
                self.pending_alerts.append(psi_alert(
                    self.config.namespace, "data_drift", res, self.config.psi_threshold,
                    self.config.psi_window, self.now, model_id=key[0], version=key[1],
                    source=source))

    def _outlier(self, key: tuple[str, int], features: dict[str, float], t: int,
                 source: str) -> OutlierResult | None:
        if not self.config.outliers:
            return None
        if key not in self.outlier_detectors:
            ref = self._reference(key)
            names = [n for n in ref.names if n != SCORE] if ref is not None else []
            self.outlier_detectors[key] = (
                OutlierDetector(ref, names) if ref is not None and names else None
            )
        detector = self.outlier_detectors[key]
        if detector is None:
            return None
        res = detector.score(features)
        for name in res.features:
            self.outlier_counts.add(source, "outlier", name, t)
        if res.multivariate:
            self.outlier_counts.add(source, "outlier", "multivariate", t)
        if res.outlier:
            self.outlier_counts.add(source, "outlier", "total", t)
        return res

    # -- pipeline ------------------------------------------------------------------
    def on_event(self, source: str, event_time: int, failures: Iterable[Any] = ()) -> None:
        """One record of an events topic (garbage included) and its check failures."""
        self.volume.record(source, event_time)
        self.quality.record_event(source, event_time, failures)
        self.watermark = max(self.watermark, event_time)
        self.records += 1

    def on_dead_letter(self, source: str, t: int, error_class: str) -> None:
        self.quality.record_dead_letter(source, t, error_class)
        self.records += 1

    def on_manifest(self, rec: dict[str, Any]) -> None:
        self.volume.manifest(rec)
        self.records += 1

    def on_lag(self, group: str, lag: int) -> None:
        """Latest consumer lag (messages) of one agent's consumer group."""
        self.lags[group] = int(lag)

    # -- output --------------------------------------------------------------------
    def tick(self, now: int, watermark: int | None = None, *,
             horizon: int | None = None) -> TickOutput:
        """Everything to publish at wall time ``now``: metrics, closed health windows, new
        alerts. ``watermark`` (event time) moves the monitor's watermark on if larger.

        ``horizon`` (the agent gives its wall clock) is the latest event time the clocks may
        reach: an event dated ahead of it (within the validation's allowed skew) is counted
        in its own window, but closes no window and evicts no label before its time.
        """
        self.now = now
        wm = self.watermark if watermark is None else max(self.watermark, watermark)
        if horizon is not None:
            wm = min(wm, horizon)
        ns = self.config.namespace
        out = TickOutput(metrics=[*self.metrics.snapshot(ns, now, clock=wm),
                                  *self.estimates.records(ns, now)])
        closing = self.closing_clock.at(now, wm, self.records)
        if horizon is not None:
            closing = min(closing, horizon)
        for vw in self.volume.close(closing):
            out.health.append(vw.doc(ns, now))
            if vw.alert:
                self.pending_alerts.append(vw.alert_record(ns, self.config.min_ratio, now))
        closed = [*self.quality.close(closing), *self.outlier_counts.close(closing)]
        still_open = [*self.quality.counts.provisional(), *self.outlier_counts.provisional()]
        for wc in [*closed, *still_open]:
            out.health.append(health_doc(ns, wc.source, wc.window_start, wc.window_end, wc.kind,
                                         wc.name, now, count=wc.count))
        out.alerts, self.pending_alerts = self.pending_alerts, []
        self._lag_docs(now, out)
        return out

    def _lag_docs(self, now: int, out: TickOutput) -> None:
        ns, w = self.config.namespace, self.config.volume_window_ms
        start = window_start(now, w)
        for group, lag in sorted(self.lags.items()):
            out.health.append(health_doc(ns, "pipeline", start, start + w, "lag", group, now,
                                         lag=lag))
            limit = self.config.lag_threshold
            if limit is not None and lag > limit:
                out.alerts.append(make_alert(
                    ns, "lag", "consumer-lag", source="pipeline", feature=None,
                    window=f"{start}-{start + w}:{group}", statistic=lag, threshold=limit,
                    message=f"consumer group {group} is {lag} messages behind",
                    event_time=now, detected_time=now))
