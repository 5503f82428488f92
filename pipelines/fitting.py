"""Fitting one model and choosing its threshold: the numeric half of training.

Threshold policy (label = 1 when ``score >= threshold``): the cut of the sorted distinct
holdout scores that maximises F1; when the model spec sets ``target_precision``, the cut
with the highest recall among those whose holdout precision reaches the target (F1 again
when none does). Ties go to the higher cut (fewer flags). A cut is only eligible when the
gap to the next lower score is at least :data:`SCORE_RESOLUTION`, and the threshold is the
shortest decimal in the middle half of that gap, never a holdout score itself: a score
would have to move by a quarter of the gap (at least 2.5e-10, millions of ulps) to change
its label. Scores that differ only in their last bits (BLAS kernels, libm builds) give
the same labels, threshold and metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from precog.errors import ConfigError, ModelError
from precog.models import (
    decide,
    dump_lightgbm,
    dump_skops,
)
from precog.registry import (
    HoldoutMetrics,
)
from precog.spec import ModelSpec

#: Score differences below this are noise to training: no cut between two scores closer than
#: this is a threshold candidate (see the module docstring).
SCORE_RESOLUTION = 1e-9
#: ROC AUC ranks the holdout scores rounded to this many decimals (near-ties are ties) and,
#: like log loss, is recorded rounded to it, so last-bit differences do not show.
METRIC_DECIMALS = 9
#: LightGBM threads while training: fixed, so the same seed gives the same model bytes.
TRAIN_THREADS = 2
_ROUNDS_ALIASES = ("n_estimators", "num_boost_round", "num_iterations", "num_trees", "num_round")


def time_split(event_times: np.ndarray, holdout_fraction: float) -> np.ndarray:
    """Holdout mask: events in the last ``holdout_fraction`` of the event-time span.

    >>> time_split(np.array([0, 10, 50, 80, 90, 100]), 0.2).tolist()
    [False, False, False, True, True, True]
    """
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"holdout fraction must be between 0 and 1, got {holdout_fraction}")
    t = np.asarray(event_times, dtype=np.int64)
    if t.size == 0:
        raise ConfigError("no labelled events to train on")
    start, end = int(t.min()), int(t.max())
    cut = start + (1 - holdout_fraction) * (end - start)
    return t >= cut


# --------------------------------------------------------------------------- models


def fit_model(
    model_spec: ModelSpec, X: np.ndarray, y: np.ndarray, features: list[str], seed: int
) -> bytes:
    """Fit one model; returns its safe artifact bytes.

    Deliberately no in-memory scoring function: the fitted estimator's own
    ``predict_proba`` differs from the served score in the last bits (BLAS), so the
    holdout is scored from the artifact, as the worker will score it.
    """
    params = dict(model_spec.params)
    try:
        if model_spec.algorithm == "lightgbm":
            return dump_lightgbm(_fit_lightgbm(params, X, y, features, seed))
        est = _sklearn_estimator(model_spec.algorithm, params, seed).fit(X, y)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {model_spec.model_id}: cannot fit with {params}: {exc}") from None
    return dump_skops(est)


def _fit_lightgbm(
    params: dict[str, Any], X: np.ndarray, y: np.ndarray, features: list[str], seed: int
) -> Any:
    import lightgbm as lgb

    rounds = 100
    for alias in _ROUNDS_ALIASES:
        if alias in params:
            rounds = int(params.pop(alias))
    full = {
        "objective": "binary",
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": TRAIN_THREADS,
        **params,
    }
    return lgb.train(full, lgb.Dataset(X, y, feature_name=features), num_boost_round=rounds)


def _sklearn_estimator(algorithm: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if algorithm == "sklearn-logistic":
        clf = LogisticRegression(**{"max_iter": 1000, "random_state": seed, **params})
        return Pipeline([("scale", StandardScaler()), ("model", clf)])
    if algorithm == "sklearn-hgb":
        return HistGradientBoostingClassifier(**{"random_state": seed, **params})
    if algorithm == "sklearn-random-forest":
        return RandomForestClassifier(**{"random_state": seed, "n_jobs": 1, **params})
    raise ModelError(f"unknown algorithm {algorithm!r}")


# --------------------------------------------------------------------------- evaluation


def choose_threshold(
    y: np.ndarray, scores: np.ndarray, target_precision: float | None = None
) -> tuple[float, str]:
    """The decision threshold and the policy that chose it (see the module docstring).

    The best cut flags the scores from 0.3 up; the threshold sits between 0.2 and 0.3:

    >>> y = np.array([0, 0, 1, 0, 1, 1]); s = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    >>> choose_threshold(y, s)
    (0.25, 'max-f1')
    >>> choose_threshold(y, s, target_precision=0.9)
    (0.5, 'max-recall@precision>=0.9')
    """
    from sklearn.metrics import precision_recall_curve

    scores = np.asarray(scores, dtype=np.float64)
    precision, recall, cuts = precision_recall_curve(y, scores)
    p, r = precision[:-1], recall[:-1]  # the last point (p=1, r=0) has no cut
    distinct = np.unique(scores)
    at = np.searchsorted(distinct, cuts)
    below = np.concatenate([[0.0], distinct])[at]  # next lower score; 0 below the lowest
    eligible = (at == 0) | (cuts - below >= SCORE_RESOLUTION)
    if target_precision is not None:
        ok = np.flatnonzero(eligible & (p >= target_precision))
        if ok.size:
            best = ok[r[ok] == r[ok].max()][-1]
            policy = f"max-recall@precision>={target_precision}"
            return threshold_between(float(below[best]), float(cuts[best])), policy
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(eligible, np.where(p + r > 0, 2 * p * r / (p + r), 0.0), -1.0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    policy = "max-f1"
    if target_precision is not None:
        policy = f"max-f1 (precision {target_precision} not reached)"
    return threshold_between(float(below[best]), float(cuts[best])), policy


def threshold_between(lower: float, upper: float) -> float:
    """The shortest decimal in the middle half of ``(lower, upper)``: flags ``upper``, not
    ``lower``, and is a quarter of the gap away from both (0.0 when both are 0).

    Short, so the stored threshold reads well and is the same when either score moves
    by a few ulps.

    >>> threshold_between(0.2, 0.3), threshold_between(0.1234, 0.1299), threshold_between(0, 0.3)
    (0.25, 0.127, 0.1)
    """
    mid = lower + (upper - lower) / 2
    quarter = (upper - lower) / 4
    for digits in range(1, 18):
        short = float(f"{mid:.{digits}g}")
        if mid - quarter <= short <= mid + quarter:
            return short
    return mid


def holdout_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> HoldoutMetrics:
    """Precision, recall, F1 at the threshold; ROC AUC and log loss of the scores.

    Counts at the threshold are exact; ROC AUC ranks the scores rounded to
    :data:`METRIC_DECIMALS` decimals and it and log loss are rounded to as many, so
    scores that differ in their last bits give equal metrics.

    >>> m = holdout_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.6]), 0.5)
    >>> m.precision, m.recall, m.roc_auc, m.positive_rate, m.label_rate
    (0.5, 0.5, 0.75, 0.5, 0.5)
    """
    from sklearn.metrics import (
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    scores = np.asarray(scores, dtype=np.float64)
    labels = decide(scores, threshold)
    auc = roc_auc_score(y, np.round(scores, METRIC_DECIMALS))
    loss = log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])
    return HoldoutMetrics(
        precision=float(precision_score(y, labels, zero_division=0)),
        recall=float(recall_score(y, labels, zero_division=0)),
        f1=float(f1_score(y, labels, zero_division=0)),
        roc_auc=round(float(auc), METRIC_DECIMALS),
        log_loss=round(float(loss), METRIC_DECIMALS),
        positive_rate=float(labels.mean()),
        label_rate=float(np.mean(y)),
    )
