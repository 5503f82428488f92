"""Performance estimated before the labels arrive, and the check that makes it trustworthy.

Outcomes (chargebacks) come days after the events, so the realised precision, recall and F1
of a window are known only late. If the model's scores are calibrated probabilities, the
expected confusion counts of a window follow from the scores alone (confidence-based
estimation): an event decided positive at score ``p`` is a true positive with probability
``p`` and a false positive with ``1 - p``; one decided negative is a false negative with
probability ``p``. :class:`EstimationBook` sums those expectations per model and event-time
window as predictions arrive, and the realised counts as their labels arrive, so each window
has its estimate at once and its realised value, with label coverage, later.

The estimate is only as good as the calibration, so :func:`calibration` checks it on the
joined labels: Spiegelhalter's z test (calibration of each probability) and the
calibration-in-the-large z test (the number of positives against the sum of the scores).
A model that fails either at level ``alpha`` is flagged, and its estimate says so.

>>> e = estimate_counts(np.array([0.9, 0.8, 0.2, 0.1]), threshold=0.5)
>>> round(e.precision(), 3), round(e.recall(), 3)
(0.85, 0.85)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from precog.monitor.alerts import make_alert

ESTIMATED = "estimated"
REALISED = "realised"


@dataclass
class Counts:
    """Confusion counts (expected ones are fractional)."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0

    @property
    def n(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    def precision(self) -> float | None:
        d = self.tp + self.fp
        return self.tp / d if d > 0 else None

    def recall(self) -> float | None:
        d = self.tp + self.fn
        return self.tp / d if d > 0 else None

    def f1(self) -> float | None:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d > 0 else None

    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n > 0 else None


def estimate_counts(scores: np.ndarray, threshold: float) -> Counts:
    """Expected confusion counts of events with calibrated ``scores`` decided at ``threshold``."""
    p = np.asarray(scores, dtype=np.float64)
    pos = p >= threshold
    return Counts(float(p[pos].sum()), float((1 - p[pos]).sum()), float(p[~pos].sum()),
                  float((1 - p[~pos]).sum()))


def realised_counts(labels: np.ndarray, outcomes: np.ndarray) -> Counts:
    """The confusion counts of decisions ``labels`` against ``outcomes``."""
    d = np.asarray(labels).astype(bool)
    y = np.asarray(outcomes).astype(bool)
    return Counts(float(np.sum(d & y)), float(np.sum(d & ~y)), float(np.sum(~d & y)),
                  float(np.sum(~d & ~y)))


@dataclass(frozen=True)
class Calibration:
    """Whether scores are calibrated probabilities, checked on joined labels."""

    n: int
    ece: float  # expected calibration error over 10 equal-width bins
    spiegelhalter_z: float
    spiegelhalter_p: float
    in_the_large_z: float  # (positives - sum of scores) / sd
    in_the_large_p: float
    calibrated: bool


def calibration(scores: np.ndarray, outcomes: np.ndarray, alpha: float = 0.01) -> Calibration:
    """Spiegelhalter's and the calibration-in-the-large two-sided z tests at ``alpha``."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(outcomes, dtype=np.float64)
    n = len(p)
    var = p * (1 - p)
    den = math.sqrt(float(np.sum((1 - 2 * p) ** 2 * var)))
    sz = float(np.sum((y - p) * (1 - 2 * p)) / den) if den > 0 else 0.0
    lz = float((y.sum() - p.sum()) / math.sqrt(float(var.sum()))) if var.sum() > 0 else 0.0
    sp, lp = float(2 * norm.sf(abs(sz))), float(2 * norm.sf(abs(lz)))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = 0.0
    for b in range(10):
        m = bins == b
        if m.any():
            ece += m.sum() / n * abs(float(y[m].mean() - p[m].mean()))
    return Calibration(n, ece, sz, sp, lz, lp, bool(sp >= alpha and lp >= alpha))


class CalibrationWatch:
    """One model's newest joined labels, checked every ``every`` labels (:func:`calibration`).

    A failed check is an alert (kind ``concept_drift``, detector ``calibration``: the
    relation of score to probability is not what the estimate assumes); it is raised again
    only after a check passed in between.
    """

    def __init__(self, last: int, every: int, alpha: float) -> None:
        self.scores: deque[float] = deque(maxlen=last)
        self.outcomes: deque[int] = deque(maxlen=last)
        self.every = every
        self.alpha = alpha
        self.seen = 0
        self.failing = False
        self.last: Calibration | None = None

    def observe(self, namespace: str, key: tuple[str, int], rec: dict[str, Any], now: int
                ) -> dict[str, Any] | None:
        self.scores.append(float(rec["score"]))
        self.outcomes.append(int(rec["outcome"]))
        self.seen += 1
        if self.seen % self.every:
            return None
        cal = calibration(np.array(self.scores), np.array(self.outcomes), self.alpha)
        self.last = cal
        was, self.failing = self.failing, not cal.calibrated
        if cal.calibrated or was:
            return None
        return make_alert(
            namespace, "concept_drift", "calibration", model_id=key[0], version=key[1],
            window=f"labels:{self.seen}", statistic=max(abs(cal.spiegelhalter_z),
                                                        abs(cal.in_the_large_z)),
            threshold=float(norm.isf(self.alpha / 2)),
            message=(f"{key[0]} v{key[1]} scores are not calibrated on its last {cal.n} labels"
                     f" (Spiegelhalter z {cal.spiegelhalter_z:+.2f}, in the large z"
                     f" {cal.in_the_large_z:+.2f}, ECE {cal.ece:.3f}): its estimated metrics"
                     " are not to be trusted"),
            event_time=int(rec["outcome_time"]), detected_time=now)


@dataclass
class _Window:
    estimated: Counts = field(default_factory=Counts)
    realised: Counts = field(default_factory=Counts)
    predictions: int = 0
    changed: bool = True


@dataclass
class EstimationBook:
    """Estimated and realised confusion counts per (model, version, role) and event-time window.

    Windows older than ``keep_ms`` before the newest event time are dropped (the label
    window plus a margin: no label can still arrive for them).
    """

    window_ms: int
    keep_ms: int
    windows: dict[tuple[str, int, str, int], _Window] = field(default_factory=dict)
    newest: int = 0

    def _window(self, model_id: str, version: int, role: str, event_time: int) -> _Window:
        start = event_time - event_time % self.window_ms
        return self.windows.setdefault((model_id, version, role, start), _Window())

    def observe_prediction(self, model_id: str, version: int, role: str, event_time: int,
                           score: float, threshold: float) -> None:
        w = self._window(model_id, version, role, event_time)
        c = w.estimated  # estimate_counts of one score, without numpy on the monitor's path
        if score >= threshold:
            c.tp += score
            c.fp += 1.0 - score
        else:
            c.fn += score
            c.tn += 1.0 - score
        w.predictions += 1
        w.changed = True
        self.newest = max(self.newest, event_time)

    def observe_labeled(self, rec: dict[str, Any]) -> None:
        w = self._window(rec["model_id"], int(rec["version"]), rec["role"],
                         int(rec["event_time"]))
        c, decided, positive = w.realised, bool(rec["label"]), bool(rec["outcome"])
        if decided:
            c.tp, c.fp = c.tp + positive, c.fp + (not positive)
        else:
            c.fn, c.tn = c.fn + positive, c.tn + (not positive)
        w.changed = True

    def records(self, namespace: str, computed_time: int, *, changed_only: bool = True
                ) -> list[dict[str, Any]]:
        """``metrics.v2`` records of the windows that changed since the last call: one
        ``estimated_<T>`` (from the scores; ``n_labels`` = predictions) and, once labels
        arrived, one ``realised_<T>`` (``label_coverage`` = labelled / predictions);
        ``event_time`` is the window start."""
        self._expire()
        span = _span(self.window_ms)
        out: list[dict[str, Any]] = []
        for (model_id, version, role, start), w in sorted(self.windows.items()):
            if changed_only and not w.changed:
                continue
            w.changed = False
            base = {"namespace": namespace, "model_id": model_id, "version": version,
                    "role": role, "roc_auc": None, "log_loss": None,
                    "label_latency_p50_ms": None, "label_latency_p95_ms": None,
                    "event_time": start, "computed_time": int(computed_time), "arm": None}
            out.append({**base, "window": f"{ESTIMATED}_{span}", "n_labels": w.predictions,
                        **_values(w.estimated), "label_coverage": None})
            if w.realised.n:
                out.append({**base, "window": f"{REALISED}_{span}", "n_labels": int(w.realised.n),
                            **_values(w.realised),
                            "label_coverage": min(1.0, w.realised.n / max(1, w.predictions))})
        return out

    def _expire(self) -> None:
        cutoff = self.newest - self.keep_ms
        for key in [k for k in self.windows if k[3] + self.window_ms < cutoff]:
            del self.windows[key]


def _values(c: Counts) -> dict[str, float | None]:
    return {"accuracy": c.accuracy(), "precision": c.precision(), "recall": c.recall(),
            "f1": c.f1()}


def _span(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"

