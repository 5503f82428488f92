"""Paired evidence: a challenger against the leader on the same labelled events.

Every model scores every event, so two models are compared on identical events and their
difference has far less noise than two independent samples would: the difference of a
metric is estimated with a paired Poisson bootstrap over events (each bootstrap row weighs
every event by a Poisson(1) count, the same weights for both models), and the decisions can
be tested with McNemar's exact test on the events where exactly one of the two is right.

Every metric is computed on weighted events, so the full sample (all weights 1) and each
bootstrap row go through the same code; with weights 1 the values equal scikit-learn's
(``tests/unit/test_lifecycle_evidence.py``).

>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.6, 0.4, 0.9])
>>> float(metric_value(MetricSpec("roc_auc"), y, p, p >= 0.5))
0.75
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from precog.errors import ConfigError

METRICS = ("f1", "precision_at_recall", "roc_auc", "log_loss", "cost")
_EPS = 1e-15


@dataclass(frozen=True)
class MetricSpec:
    """Which metric ranks models, and its parameters."""

    name: str = "f1"
    recall: float = 0.8  # precision_at_recall: precision at the first threshold reaching it
    cost_fp: float = 1.0  # cost: of a false positive, per event
    cost_fn: float = 10.0  # cost: of a false negative, per event

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise ConfigError(f"unknown metric {self.name!r}: one of {', '.join(METRICS)}")
        if not 0.0 < self.recall <= 1.0:
            raise ConfigError(f"recall must be in (0, 1], got {self.recall}")

    @property
    def higher_is_better(self) -> bool:
        return self.name not in ("log_loss", "cost")

    def gain(self, value: np.ndarray | float, baseline: np.ndarray | float) -> np.ndarray:
        """How much better ``value`` is than ``baseline`` (positive: better)."""
        diff = np.asarray(value, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
        return diff if self.higher_is_better else -diff


def metric_values(
    metric: MetricSpec, y: np.ndarray, score: np.ndarray, label: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """The metric for each row of event weights ``w`` (shape (rows, n)) -> (rows,).

    ``y`` are the outcomes (0/1), ``score`` the model's probabilities, ``label`` its
    decisions at its threshold. Undefined values (no positives for F1's denominator, one
    class only for ROC AUC) are NaN.
    """
    yb = np.asarray(y).astype(bool)
    lb = np.asarray(label).astype(bool)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    if metric.name == "f1":
        tp = w @ (lb & yb)
        fp = w @ (lb & ~yb)
        fn = w @ (~lb & yb)
        den = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * tp / den, np.nan)
    if metric.name == "cost":
        fp = w @ (lb & ~yb)
        fn = w @ (~lb & yb)
        return (metric.cost_fp * fp + metric.cost_fn * fn) / w.sum(axis=1)
    s = np.asarray(score, dtype=np.float64)
    if metric.name == "log_loss":
        p = np.clip(s, _EPS, 1 - _EPS)
        ll = -np.where(yb, np.log(p), np.log1p(-p))
        return (w @ ll) / w.sum(axis=1)
    if metric.name == "roc_auc":
        return _roc_auc(yb, s, w)
    return _precision_at_recall(yb, s, w, metric.recall)


def metric_value(metric: MetricSpec, y: np.ndarray, score: np.ndarray, label: np.ndarray) -> float:
    """The metric on the events as they are (every weight 1)."""
    return float(metric_values(metric, y, score, label, np.ones((1, len(y))))[0])


def _tie_groups(s: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Event order by score and the start index of each group of equal scores in it."""
    order = np.argsort(-s if descending else s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    return order, starts


def _roc_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    # AUC = P(score of a positive > score of a negative) + 0.5 P(equal), weighted.
    order, starts = _tie_groups(s, descending=False)
    wn = w[:, order] * ~y[order]
    wp = w[:, order] * y[order]
    neg_per_group = np.add.reduceat(wn, starts, axis=1)
    pos_per_group = np.add.reduceat(wp, starts, axis=1)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    num = (pos_per_group * (neg_below + 0.5 * neg_per_group)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _precision_at_recall(y: np.ndarray, s: np.ndarray, w: np.ndarray, recall: float) -> np.ndarray:
    # Thresholds from the highest score down; the first one whose recall reaches the
    # target gives the precision (ties share one threshold, as in precision_recall_curve).
    order, starts = _tie_groups(s, descending=True)
    tp = np.cumsum(np.add.reduceat(w[:, order] * y[order], starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w[:, order] * ~y[order], starts, axis=1), axis=1)
    positives = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        reached = tp >= recall * positives - 1e-12 * positives
        first = np.argmax(reached, axis=1)
        rows = np.arange(len(w))
        prec = tp[rows, first] / (tp[rows, first] + fp[rows, first])
    return np.where(positives[:, 0] > 0, prec, np.nan)


@dataclass(frozen=True)
class Predictions:
    """One model's scores and decisions on the paired events."""

    score: np.ndarray
    label: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """The evidence that a challenger beats the leader on the same events."""

    test: str  # "bootstrap" | "mcnemar"
    n: int
    positives: int
    leader_value: float
    challenger_value: float
    gain: float  # challenger better by this much (sign-corrected for lower-is-better)
    statistic: float  # bootstrap: lower bound of the gain; mcnemar: chi-square
    p_value: float  # probability of the observed evidence if the gain were <= margin
    ci_low: float  # one-sided (1 - alpha) lower bound of the gain (bootstrap), else nan
    leader_only_right: int  # McNemar's b: events the leader decides right, the challenger wrong
    challenger_only_right: int  # McNemar's c

    def supports(self, margin: float, alpha: float) -> bool:
        """True when the challenger is better by more than ``margin`` at level ``alpha``."""
        if not np.isfinite(self.gain) or self.gain <= margin:
            return False
        if self.test == "bootstrap":
            return bool(self.ci_low > margin and self.p_value < alpha)
        return bool(self.p_value < alpha)


def _weight_rows(n: int, samples: int, seed: int, chunk: int = 128) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        rows = min(chunk, samples - done)
        yield rng.poisson(1.0, size=(rows, n)).astype(np.float64)
        done += rows


def compare(
    metric: MetricSpec,
    y: np.ndarray,
    leader: Predictions,
    challenger: Predictions,
    *,
    test: str = "bootstrap",
    margin: float = 0.0,
    alpha: float = 0.05,
    samples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Compare two models on the same events (arrays aligned by event).

    ``bootstrap``: the gain of the metric in ``samples`` paired Poisson-bootstrap rows;
    ``p_value`` is the share of rows whose gain is <= ``margin`` and ``ci_low`` the
    ``alpha`` quantile of the gains. ``mcnemar``: the exact one-sided binomial test that
    the challenger is right more often on the events where the two decisions differ in
    correctness; the metric gain must still exceed the margin.
    """
    y = np.asarray(y).astype(np.int64)
    n = int(len(y))
    if test not in ("bootstrap", "mcnemar"):
        raise ConfigError(f"unknown test {test!r}: bootstrap or mcnemar")
    lv = metric_value(metric, y, leader.score, leader.label)
    cv = metric_value(metric, y, challenger.score, challenger.label)
    gain = float(metric.gain(cv, lv))
    right_l = np.asarray(leader.label).astype(np.int64) == y
    right_c = np.asarray(challenger.label).astype(np.int64) == y
    b = int(np.sum(right_l & ~right_c))
    c = int(np.sum(~right_l & right_c))
    if test == "mcnemar":
        p = float(binomtest(c, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
        chi2 = float((abs(b - c) - 1) ** 2 / (b + c)) if b + c else 0.0
        return Comparison(test, n, int(y.sum()), lv, cv, gain, chi2, p, float("nan"), b, c)
    gains: list[np.ndarray] = []
    for w in _weight_rows(n, samples, seed):
        g = metric.gain(
            metric_values(metric, y, challenger.score, challenger.label, w),
            metric_values(metric, y, leader.score, leader.label, w),
        )
        gains.append(g)
    all_gains = np.concatenate(gains) if gains else np.array([np.nan])
    finite = all_gains[np.isfinite(all_gains)]
    if len(finite) == 0:
        return Comparison(test, n, int(y.sum()), lv, cv, gain, float("nan"), 1.0,
                          float("nan"), b, c)
    ci_low = float(np.quantile(finite, alpha))
    p = float(np.mean(finite <= margin))
    return Comparison(test, n, int(y.sum()), lv, cv, gain, ci_low, p, ci_low, b, c)
