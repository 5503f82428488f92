"""Drift detectors: concept drift (ADWIN on errors), prediction and data drift (windowed PSI).

* **Concept drift**: ``river.drift.ADWIN`` on each model's 0/1 error stream
  (``error = decision != outcome``), one update per label.
* **Prediction drift**: PSI of each model's scores per window of K predictions against the
  training score reference (or, when the model has none, against its first window).
* **Data drift**: PSI of each feature per window of K events against the training
  reference's quantile bins. One bin lookup (bisection) per feature and event; the PSI
  itself is computed once per window.

>>> psi((0.5, 0.5), [50, 50])
0.0
>>> round(psi((0.5, 0.5), [90, 10]), 4)
0.8789
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from river import drift, stats, utils

from precog.monitor.alerts import make_alert
from precog.monitor.reference import FeatureReference

#: PSI above this is a significant shift (the usual rule of thumb: < 0.1 stable, > 0.2 shift)
PSI_THRESHOLD = 0.2
#: share given to empty bins so the logarithm stays finite
PSI_EPSILON = 1e-4


def psi(expected: Sequence[float], actual_counts: Sequence[int], eps: float = PSI_EPSILON) -> float:
    """Population stability index of observed bin counts against expected bin shares."""
    total = sum(actual_counts)
    if total == 0:
        return 0.0
    out = 0.0
    for e, c in zip(expected, actual_counts, strict=True):
        a = max(c / total, eps)
        e = max(e, eps)
        out += (a - e) * math.log(a / e)
    return out


@dataclass(frozen=True)
class ConceptDriftDetection:
    """ADWIN fired at label ``index`` (0-based).

    ``error_before`` is ADWIN's mean error before this label, ``error_after`` the error
    rate of the most recent ``recent`` labels, ``width`` ADWIN's window after the cut.
    """

    index: int
    error_before: float
    error_after: float
    width: int


class ConceptDrift:
    """ADWIN on a 0/1 error stream.

    >>> cd = ConceptDrift()
    >>> hits = [cd.update(int(i >= 500 and i % 2 == 0)) for i in range(1000)]
    >>> [h.index for h in hits if h]
    [543]
    """

    def __init__(self, delta: float = 0.002, clock: int = 32, recent: int = 128) -> None:
        self.delta = delta
        self.adwin = drift.ADWIN(delta=delta, clock=clock)
        self.recent = utils.Rolling(stats.Mean, window_size=recent)
        self.n = 0

    def update(self, error: int) -> ConceptDriftDetection | None:
        before = self.adwin.estimation
        self.adwin.update(int(error))
        self.recent.update(int(error))
        self.n += 1
        if not self.adwin.drift_detected:
            return None
        # river's Rolling proxies ``get`` dynamically, which mypy cannot see
        recent: float = self.recent.get()  # type: ignore[operator]
        return ConceptDriftDetection(self.n - 1, before, recent, int(self.adwin.width))


@dataclass(frozen=True)
class PSIResult:
    """PSI of one feature over one window of events."""

    feature: str
    psi: float
    window_index: int
    first_time: int
    last_time: int
    drifted: bool


@dataclass
class _Counts:
    ref: FeatureReference | None
    counts: list[int] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)


class PSIDrift:
    """Windowed PSI of named values against reference bins.

    Parameters
    ----------
    reference
        Feature name -> training reference. A name without a reference learns one from
        its first window (quantile bins of those values) and is compared from then on.
    window
        K: events per window. PSI is computed when a window fills.
    names
        Values to watch (default: the reference's names).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = {"x": FeatureReference.from_values("x", rng.normal(size=5000))}
    >>> d = PSIDrift(ref, window=500)
    >>> res = [r for i in range(1500) for r in d.update({"x": rng.normal() + (i >= 1000)}, i)]
    >>> [(r.window_index, r.drifted) for r in res]
    [(0, False), (1, False), (2, True)]
    """

    def __init__(self, reference: Mapping[str, FeatureReference] | None = None,
                 window: int = 1000, threshold: float = PSI_THRESHOLD,
                 names: Sequence[str] | None = None, bins: int = 10) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        reference = dict(reference or {})
        self.window = window
        self.threshold = threshold
        self.bins = bins
        self.names = list(names) if names is not None else list(reference)
        self._state = {n: _Counts(reference.get(n)) for n in self.names}
        for st in self._state.values():
            if st.ref is not None:
                st.counts = [0] * st.ref.n_bins
        self.n = 0
        self.window_index = 0
        # earliest and latest event time of the window (partitions interleave, so the
        # first and last events to arrive are not the window's bounds)
        self._first_time = 0
        self._last_time = 0

    def update(self, values: Mapping[str, float], event_time: int) -> list[PSIResult]:
        """Add one event; returns the per-feature PSI when this event closes a window."""
        if self.n == 0:
            self._first_time = self._last_time = event_time
        self._first_time = min(self._first_time, event_time)
        self._last_time = max(self._last_time, event_time)
        for name, st in self._state.items():
            v = values.get(name)
            if v is None:
                continue
            if st.ref is None:
                st.warmup.append(float(v))
            else:
                st.counts[st.ref.bin_of(v)] += 1
        self.n += 1
        if self.n < self.window:
            return []
        return self._close()

    def _close(self) -> list[PSIResult]:
        results = []
        for name, st in self._state.items():
            if st.ref is None:
                if st.warmup:
                    st.ref = FeatureReference.from_values(name, st.warmup, self.bins)
                    st.warmup = []
                    st.counts = [0] * st.ref.n_bins
                continue
            value = psi(st.ref.shares, st.counts)
            results.append(PSIResult(name, value, self.window_index, self._first_time,
                                     self._last_time, value > self.threshold))
            st.counts = [0] * st.ref.n_bins
        self.n = 0
        self.window_index += 1
        return results


def concept_drift_alert(namespace: str, model_id: str, version: int, det: ConceptDriftDetection,
                        delta: float, event_time: int, now: int,
                        event_id: str | None = None) -> dict[str, Any]:
    """The ``concept_drift`` alert of one ADWIN detection.

    Its id comes from the event id of the label that fired it (when given): the label
    count in ``window`` restarts with the worker, the event id does not.
    """
    return make_alert(
        namespace, "concept_drift", "ADWIN", model_id=model_id, version=version,
        window=f"labels#{det.index}", statistic=det.error_after, threshold=delta,
        message=(f"{model_id} v{version}: error rate changed {det.error_before:.4f} ->"
                 f" {det.error_after:.4f} (last labels) at label {det.index}"
                 f" (ADWIN delta={delta}, window now {det.width} labels)"),
        event_time=event_time, detected_time=now, severity="critical",
        identity=f"label:{event_id}" if event_id is not None else None,
    )


def psi_alert(namespace: str, kind: str, res: PSIResult, threshold: float, window: int,
              now: int, model_id: str | None = None, version: int | None = None,
              source: str | None = None) -> dict[str, Any]:
    """The ``data_drift`` / ``prediction_drift`` alert of one PSI window."""
    feature = None if kind == "prediction_drift" else res.feature
    subject = f"{model_id} v{version} scores" if feature is None else f"feature {feature}"
    return make_alert(
        namespace, kind, "PSI", model_id=model_id, version=version, feature=feature,
        source=source, window=f"events#{res.window_index}x{window}", statistic=res.psi,
        threshold=threshold,
        message=(f"{subject}: PSI {res.psi:.3f} > {threshold} over {window} events"
                 f" (event time {res.first_time}..{res.last_time})"),
        event_time=res.last_time, detected_time=now,
    )
