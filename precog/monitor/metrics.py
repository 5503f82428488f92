"""Online classification metrics per model with River: cumulative, last N labels, last T.

Each (model_id, version, role) gets three windows of the same bundle of River metrics:
``cumulative``, ``last_<N>`` (``river.utils.Rolling`` over labels) and ``last_<T>``
(``river.utils.TimeRolling`` over the label's outcome time). Accuracy, precision, recall
and F1 come from one shared River confusion matrix; log loss is River's ``LogLoss``
(clipped like scikit-learn); ROC AUC is :class:`ExactROCAUC` (River's ``ROCAUC`` is an
approximation). Undefined
values (no positive prediction, one class only) are ``None``.

>>> book = MetricsBook(last_n=2, last_ms=60_000)
>>> for score, label, outcome, t in [(0.9, 1, 1, 0), (0.2, 0, 1, 60_000), (0.7, 1, 0, 90_000)]:
...     book.observe_labeled({"model_id": "m", "version": 1, "role": "leader",
...         "score": score, "label": label, "outcome": outcome,
...         "event_time": 0, "outcome_time": t, "label_latency_ms": t})
>>> [(r["window"], r["n_labels"], r["accuracy"]) for r in book.snapshot("prod", 99)]
[('cumulative', 3, 0.3333333333333333), ('last_2', 2, 0.0), ('last_1m', 2, 0.0)]
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from river import metrics, stats, utils

_EPS = sys.float_info.epsilon
EPOCH = dt.datetime(1970, 1, 1)  # naive: TimeRolling compares with a naive datetime


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

    The arguments are one tuple so ``river.utils.Rolling`` and ``TimeRolling`` can replay
    them on revert: ``(outcome, decision, score, latency_ms)``.
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

    def update(self, pair: tuple[int, int, float, int]) -> None:
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

    def revert(self, pair: tuple[int, int, float, int]) -> None:
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


@dataclass
class ModelMetrics:
    """All windows of one (model_id, version, role)."""

    last_n: int
    last_ms: int
    cumulative: LabelMetrics = field(default_factory=lambda: LabelMetrics(exact_latency=False))
    predictions: int = 0
    newest_outcome_time: int = 0
    rolling: Any = None
    timed: Any = None

    def __post_init__(self) -> None:
        self.rolling = utils.Rolling(LabelMetrics, window_size=self.last_n)
        self.timed = utils.TimeRolling(LabelMetrics, period=dt.timedelta(milliseconds=self.last_ms))

    def update(self, rec: dict[str, Any]) -> None:
        pair = (int(rec["outcome"]), int(rec["label"]), float(rec["score"]),
                int(rec["label_latency_ms"]))
        t = int(rec["outcome_time"])
        self.cumulative.update(pair)
        self.rolling.update(pair)
        self.timed.update(pair, t=EPOCH + dt.timedelta(milliseconds=t))
        self.newest_outcome_time = max(self.newest_outcome_time, t)

    def windows(self) -> list[tuple[str, LabelMetrics]]:
        return [
            ("cumulative", self.cumulative),
            (f"last_{self.last_n}", self.rolling.obj),
            (window_name_ms(self.last_ms), self.timed.obj),
        ]


class MetricsBook:
    """Online metrics of every model seen, and their ``metrics.v1`` snapshot."""

    def __init__(self, last_n: int = 1000, last_ms: int = 3_600_000) -> None:
        if last_n <= 0 or last_ms <= 0:
            raise ValueError("last_n and last_ms must be > 0")
        self.last_n = last_n
        self.last_ms = last_ms
        self.models: dict[tuple[str, int, str], ModelMetrics] = {}

    def _model(self, model_id: str, version: int, role: str) -> ModelMetrics:
        key = (model_id, int(version), str(role))
        if key not in self.models:
            self.models[key] = ModelMetrics(self.last_n, self.last_ms)
        return self.models[key]

    def observe_prediction(self, pred: dict[str, Any]) -> None:
        """Count a prediction record for label coverage (each model that scored it)."""
        for m in [pred["leader"], *pred.get("challengers", [])]:
            self._model(m["model_id"], m["version"], m["role"]).predictions += 1

    def observe_labeled(self, rec: dict[str, Any]) -> None:
        """Add one ``labeled.v1`` record to its model's windows."""
        self._model(rec["model_id"], rec["version"], rec["role"]).update(rec)

    def snapshot(self, namespace: str, computed_time: int) -> list[dict[str, Any]]:
        """One ``metrics.v1`` record per model and window (models with labels only)."""
        out: list[dict[str, Any]] = []
        for (model_id, version, role), mm in sorted(self.models.items()):
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
                }
                if window == "cumulative" and mm.predictions:
                    rec["label_coverage"] = min(1.0, mm.cumulative.n / mm.predictions)
                out.append(rec)
        return out
