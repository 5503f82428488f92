"""Online classification metrics per model with River: cumulative, newest N, last T.

(Over 400 lines: the windows and the book that holds them share one clock and are
read together; splitting them would separate a definition from its only user.)

Each (model_id, version, role) gets three windows of the same bundle of River metrics, and
so does each traffic arm (canary, ab) of a model: the labels of the events whose served
decision was that model's, in that arm (``labeled.v2`` ``served`` and ``arm``). A
window is a function of the labels received so far and of one clock, never of the order
the labels arrived in:

* ``cumulative``: every label received since the monitor started.
* ``last_<N>``: the N labels with the largest ``(outcome_time, event_id, prediction_id)``,
  i.e. the newest N outcomes (not the N received last: old outcomes delivered late do not
  push newer ones out).
* ``last_<T>`` at clock ``C``: the labels whose ``outcome_time`` is in ``(C - T, C]``. The
  book's clock ``C`` is event time: the largest of every ``outcome_time`` received (by any
  model of the book) and every clock given to :meth:`MetricsBook.advance` (the monitor
  gives its event-time watermark at every tick). It only moves forward. So a label with
  ``outcome_time <= C - T`` when it arrives is never counted, and a label leaves the
  window as soon as the clock passes it, whether or not a newer label arrives.

River's ``utils.Rolling`` evicts in arrival order and ``utils.TimeRolling`` only when a
newer label arrives, so the two windows are small heaps (:class:`NewestWindow`,
:class:`TimeWindow`) that ``update`` and ``revert`` the River metrics. Memory: N labels,
and the labels inside T.

Accuracy, precision, recall and F1 come from one shared River confusion matrix; log loss
is River's ``LogLoss`` (clipped like scikit-learn); ROC AUC is :class:`ExactROCAUC`
(River's ``ROCAUC`` is an approximation). Undefined values (no positive prediction, one
class only) are ``None``.

>>> book = MetricsBook(last_n=2, last_ms=60_000)
>>> def label(score, decision, outcome, t):
...     book.observe_labeled({"model_id": "m", "version": 1, "role": "leader",
...         "score": score, "label": decision, "outcome": outcome,
...         "event_time": 0, "outcome_time": t, "label_latency_ms": t})
>>> for row in [(0.9, 1, 1, 0), (0.2, 0, 1, 60_000), (0.7, 1, 0, 90_000)]:
...     label(*row)
>>> [(r["window"], r["n_labels"], r["accuracy"]) for r in book.snapshot("prod", 99)]
[('cumulative', 3, 0.3333333333333333), ('last_2', 2, 0.0), ('last_1m', 2, 0.0)]

The clock moves on without a newer label; a label older than the window is not counted:

>>> label(0.8, 1, 1, 70_000)  # window (30s, 90s]: counted, and among the newest 2
>>> [(r["window"], r["n_labels"]) for r in book.snapshot("prod", 100, clock=140_000)]
[('cumulative', 4), ('last_2', 2), ('last_1m', 1)]
>>> label(0.8, 1, 1, 75_000)  # window (80s, 140s]: too old when it arrives
>>> [r["n_labels"] for r in book.snapshot("prod", 101)]
[5, 2, 1]
"""

from __future__ import annotations

import bisect
import heapq
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from river import metrics, stats

_EPS = sys.float_info.epsilon

#: ``(outcome, decision, score, label_latency_ms)`` of one label
Pair = tuple[int, int, float, int]


class ExactROCAUC(metrics.base.BinaryMetric):
    """Exact ROC AUC (Mann-Whitney U with ties counted half), revertable for windows.

    Keeps the count of each distinct score per class; ``get`` ranks them once, so
    ``update``/``revert`` are O(1) and ``get`` is O(d log d) in distinct scores.

    >>> auc = ExactROCAUC()
    >>> for y, p in [(0, 0.1), (0, 0.4), (1, 0.35), (1, 0.8)]:
    ...     auc.update(y, p)
    >>> auc.get()
    0.75
    >>> auc.revert(0, 0.4); auc.get()
    1.0
    """

    def __init__(self, pos_val: Any = 1) -> None:
        super().__init__(pos_val=pos_val)
        self._pos: Counter[float] = Counter()
        self._neg: Counter[float] = Counter()

    @property
    def requires_labels(self) -> bool:
        return False

    def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        counts = self._pos if y_true == self.pos_val else self._neg
        counts[float(y_pred)] += 1

    def revert(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        counts = self._pos if y_true == self.pos_val else self._neg
        key = float(y_pred)
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]

    def get(self) -> float:
        n_pos, n_neg = sum(self._pos.values()), sum(self._neg.values())
        if n_pos == 0 or n_neg == 0:
            return 0.0
        below = 0  # negatives with a strictly lower score so far
        u = 0.0
        for s in sorted(self._pos.keys() | self._neg.keys()):
            pos, neg = self._pos.get(s, 0), self._neg.get(s, 0)
            u += pos * (below + 0.5 * neg)
            below += neg
        return u / (n_pos * n_neg)

    def defined(self) -> bool:
        return bool(self._pos) and bool(self._neg)


class LogLoss(metrics.LogLoss):
    """River's log loss, with probabilities clipped at float64 machine epsilon.

    River clips at 1e-15, scikit-learn (>= 1.5) at ``np.finfo(float).eps``; clipping the
    same way keeps a score of exactly 0 or 1 equal to the offline recomputation.

    >>> m = LogLoss(); m.update(True, 0.0); round(m.get(), 4)
    36.0437
    """

    def _eval(self, y_true: Any, y_pred: Any) -> float:
        p = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else float(y_pred)
        p = min(max(p, _EPS), 1.0 - _EPS)
        return -math.log(p) if y_true else -math.log(1.0 - p)


class SortedValues:
    """A multiset of numbers kept sorted, revertable, with exact quantiles.

    >>> v = SortedValues()
    >>> for x in [5, 1, 3, 9]:
    ...     v.update(x)
    >>> v.quantile(0.5), round(v.quantile(0.95), 6)
    (4.0, 8.4)
    """

    def __init__(self) -> None:
        self.values: list[float] = []

    def update(self, x: float) -> None:
        bisect.insort(self.values, float(x))

    def revert(self, x: float) -> None:
        i = bisect.bisect_left(self.values, float(x))
        if i < len(self.values) and self.values[i] == float(x):
            del self.values[i]

    def quantile(self, q: float) -> float | None:
        """Linear interpolation between closest ranks (numpy's default method)."""
        n = len(self.values)
        if n == 0:
            return None
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return self.values[lo] + (self.values[hi] - self.values[lo]) * (pos - lo)


class LabelMetrics:
    """The metric bundle over one window; ``update``/``revert`` one labeled pair.

    The argument is one :data:`Pair` so a window keeps what it must revert as one value.
    """

    def __init__(self, exact_latency: bool = True) -> None:
        self.cm = metrics.ConfusionMatrix()
        self.accuracy = metrics.Accuracy(cm=self.cm)
        self.precision = metrics.Precision(cm=self.cm, pos_val=1)
        self.recall = metrics.Recall(cm=self.cm, pos_val=1)
        self.auc = ExactROCAUC(pos_val=1)
        self.log_loss = LogLoss()
        self.n = 0
        self.exact_latency = exact_latency
        self.latency = SortedValues()
        self.p50 = stats.Quantile(0.5)
        self.p95 = stats.Quantile(0.95)

    def update(self, pair: Pair) -> None:
        outcome, decision, score, latency = pair
        self.cm.update(outcome, decision)  # shared by accuracy, precision, recall
        self.auc.update(outcome, score)
        self.log_loss.update(outcome == 1, score)
        self.n += 1
        if self.exact_latency:
            self.latency.update(latency)
        else:
            self.p50.update(latency)
            self.p95.update(latency)

    def revert(self, pair: Pair) -> None:
        outcome, decision, score, latency = pair
        self.cm.revert(outcome, decision)
        self.auc.revert(outcome, score)
        self.log_loss.revert(outcome == 1, score)
        self.n -= 1
        self.latency.revert(latency)

    def values(self) -> dict[str, float | None]:
        """The metrics.v1 fields; ``None`` where a metric is undefined."""
        tp = self.cm.true_positives(1)
        fp = self.cm.false_positives(1)
        fn = self.cm.false_negatives(1)
        if self.exact_latency:
            p50, p95 = self.latency.quantile(0.5), self.latency.quantile(0.95)
        else:
            p50, p95 = self.p50.get(), self.p95.get()
        return {
            "accuracy": self.accuracy.get() if self.n else None,
            "precision": self.precision.get() if tp + fp else None,
            "recall": self.recall.get() if tp + fn else None,
            # scikit-learn's form 2tp / (2tp + fp + fn): equal to the last bit
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "roc_auc": self.auc.get() if self.auc.defined() else None,
            "log_loss": self.log_loss.get() if self.n else None,
            "label_latency_p50_ms": p50 if self.n else None,
            "label_latency_p95_ms": p95 if self.n else None,
        }


def window_name_ms(ms: int) -> str:
    """``last_<T>`` with the largest whole unit.

    >>> window_name_ms(3_600_000), window_name_ms(90_000), window_name_ms(86_400_000 * 7)
    ('last_1h', 'last_90s', 'last_7d')
    """
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"last_{ms // size}{unit}"
    return f"last_{ms}ms"


class NewestWindow:
    """The ``size`` labels with the largest keys (a min-heap); a label pushed out is reverted.

    Which labels are kept depends on their keys only, not on the order they arrive in.

    >>> w = NewestWindow(2)
    >>> for key in [(5, "a"), (1, "b"), (9, "c"), (3, "d")]:
    ...     w.update(key, (1, 1, 0.9, 0))
    >>> sorted(key for key, _, _ in w.heap), w.metrics.n
    ([(5, 'a'), (9, 'c')], 2)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.metrics = LabelMetrics()
        self.heap: list[tuple[Any, int, Pair]] = []
        self._seq = 0  # equal keys never compare their pairs

    def update(self, key: Any, pair: Pair) -> None:
        self._seq += 1
        item = (key, self._seq, pair)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, item)
        elif key > self.heap[0][0]:
            self.metrics.revert(heapq.heapreplace(self.heap, item)[2])
        else:
            return
        self.metrics.update(pair)


class TimeWindow:
    """The labels whose time is in ``(clock - period_ms, clock]``; the clock only moves on.

    A label is counted on arrival when it is inside the window, and reverted when the
    clock passes it (:meth:`advance`), whether or not a newer label arrives.

    >>> w = TimeWindow(60_000)
    >>> w.update(10_000, (1, 1, 0.9, 0)); w.update(50_000, (0, 0, 0.1, 0))
    >>> w.advance(100_000); w.metrics.n  # (40s, 100s]: 10s left
    1
    >>> w.update(30_000, (1, 1, 0.9, 0)); w.metrics.n  # too old on arrival: never counted
    1
    """

    def __init__(self, period_ms: int) -> None:
        self.period_ms = period_ms
        self.metrics = LabelMetrics()
        self.clock: int | None = None
        self.heap: list[tuple[int, int, Pair]] = []
        self._seq = 0

    def advance(self, clock: int) -> None:
        """Move the clock to ``clock`` (if later) and revert the labels it passed."""
        if self.clock is not None and clock <= self.clock:
            return
        self.clock = clock
        horizon = clock - self.period_ms
        while self.heap and self.heap[0][0] <= horizon:
            self.metrics.revert(heapq.heappop(self.heap)[2])

    def update(self, t: int, pair: Pair) -> None:
        """A label at time ``t`` (the clock moves to ``t`` if that is later)."""
        self.advance(t)
        if self.clock is not None and t <= self.clock - self.period_ms:
            return
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, pair))
        self.metrics.update(pair)


@dataclass
class ModelMetrics:
    """All windows of one (model_id, version, role)."""

    last_n: int
    last_ms: int
    cumulative: LabelMetrics = field(default_factory=lambda: LabelMetrics(exact_latency=False))
    predictions: int = 0
    newest_outcome_time: int = 0
    newest: NewestWindow = field(init=False)
    recent: TimeWindow = field(init=False)

    def __post_init__(self) -> None:
        self.newest = NewestWindow(self.last_n)
        self.recent = TimeWindow(self.last_ms)

    def update(self, rec: dict[str, Any], clock: int) -> None:
        """One labeled record; ``clock`` is the book's clock (at least its outcome time)."""
        pair = (int(rec["outcome"]), int(rec["label"]), float(rec["score"]),
                int(rec["label_latency_ms"]))
        t = int(rec["outcome_time"])
        self.cumulative.update(pair)
        self.newest.update((t, str(rec.get("event_id", "")), str(rec.get("prediction_id", ""))),
                           pair)
        self.recent.advance(clock)
        self.recent.update(t, pair)
        self.newest_outcome_time = max(self.newest_outcome_time, t)

    def windows(self) -> list[tuple[str, LabelMetrics]]:
        return [
            ("cumulative", self.cumulative),
            (f"last_{self.last_n}", self.newest.metrics),
            (window_name_ms(self.last_ms), self.recent.metrics),
        ]


class MetricsBook:
    """Online metrics of every model and traffic arm seen, and their ``metrics.v2`` snapshot.

    Keys are ``(model_id, version, role, arm)``; ``arm`` is None for the model on every
    event it scored.
    """

    def __init__(self, last_n: int = 1000, last_ms: int = 3_600_000) -> None:
        if last_n <= 0 or last_ms <= 0:
            raise ValueError("last_n and last_ms must be > 0")
        self.last_n = last_n
        self.last_ms = last_ms
        self.models: dict[tuple[str, int, str, str | None], ModelMetrics] = {}
        self.clock: int | None = None

    def _model(self, model_id: str, version: int, role: str,
               arm: str | None = None) -> ModelMetrics:
        key = (model_id, int(version), str(role), arm)
        if key not in self.models:
            self.models[key] = ModelMetrics(self.last_n, self.last_ms)
        return self.models[key]

    def observe_prediction(self, pred: dict[str, Any]) -> None:
        """Count a prediction record for label coverage (each model that scored it, and the
        served model in its traffic arm)."""
        models = [pred["leader"], *pred.get("challengers", [])]
        for m in models:
            self._model(m["model_id"], m["version"], m["role"]).predictions += 1
        served = pred.get("served")
        if served is not None and served["policy"] != "shadow":
            by = served["decided_by"]
            role = next((str(m["role"]) for m in models if m["model_id"] == by["model_id"]
                         and int(m["version"]) == int(by["version"])), "challenger")
            self._model(by["model_id"], by["version"], role, str(served["arm"])).predictions += 1

    def observe_labeled(self, rec: dict[str, Any]) -> None:
        """Add one ``labeled.v2`` record to its model's windows (and its arm's, if served)."""
        t = int(rec["outcome_time"])
        self.clock = t if self.clock is None else max(self.clock, t)
        self._model(rec["model_id"], rec["version"], rec["role"]).update(rec, self.clock)
        arm = rec.get("arm")
        if arm is not None and rec.get("served"):
            self._model(rec["model_id"], rec["version"], rec["role"], str(arm)).update(
                rec, self.clock)

    def advance(self, clock: int | None) -> None:
        """Move the clock on to ``clock`` (event time; never back) in every model's window."""
        if clock is not None:
            self.clock = int(clock) if self.clock is None else max(self.clock, int(clock))
        if self.clock is not None:
            for mm in self.models.values():
                mm.recent.advance(self.clock)

    def snapshot(self, namespace: str, computed_time: int,
                 clock: int | None = None) -> list[dict[str, Any]]:
        """One ``metrics.v2`` record per model (and traffic arm) and window (with labels
        only), the time windows at the book's clock moved on to ``clock``."""
        self.advance(clock)
        out: list[dict[str, Any]] = []
        for (model_id, version, role, arm), mm in sorted(
                self.models.items(), key=lambda kv: (*kv[0][:3], kv[0][3] or "")):
            if mm.cumulative.n == 0:
                continue
            for window, bundle in mm.windows():
                rec: dict[str, Any] = {
                    "namespace": namespace,
                    "model_id": model_id,
                    "version": version,
                    "role": role,
                    "window": window,
                    "n_labels": bundle.n,
                    **bundle.values(),
                    "label_coverage": None,
                    "event_time": mm.newest_outcome_time,
                    "computed_time": int(computed_time),
                    "arm": arm,
                }
                if window == "cumulative" and mm.predictions:
                    rec["label_coverage"] = min(1.0, mm.cumulative.n / mm.predictions)
                out.append(rec)
        return out


def metrics_doc_id(rec: dict[str, Any]) -> str:
    """The ``{ns}-metrics`` ``_id`` of a metrics record: model, version, arm, window, time.

    >>> metrics_doc_id({"model_id": "m", "version": 2, "window": "cumulative",
    ...                 "computed_time": 9, "arm": None})
    'm:2:cumulative:9'
    >>> metrics_doc_id({"model_id": "m", "version": 2, "window": "cumulative",
    ...                 "computed_time": 9, "arm": "canary"})
    'm:2:arm=canary:cumulative:9'
    """
    arm = rec.get("arm")
    where = "" if arm is None else f"arm={arm}:"
    return f"{rec['model_id']}:{rec['version']}:{where}{rec['window']}:{rec['computed_time']}"
