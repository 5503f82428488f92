"""Training pipeline: history -> labelled features -> models -> holdout metrics -> registry.

``train(settings, spec, history_dir)`` reads a history written by the simulator (events +
delayed outcomes), builds features with the same code the online path uses, splits
off the last ``holdout_fraction`` of event time as the holdout, fits every model of the
spec on its feature subset, picks each model's decision threshold on the holdout,
registers the models (files, then the ``{ns}-models`` index) and, when the spec has no
roles yet, publishes the initial leader and challengers to ``{ns}.model-control``.

Holdout scores are the served scores (:func:`precog.models.served_scores` of the artifact
as registered), so the metrics describe exactly what the worker computes.

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from precog.errors import ConfigError, ModelError, ServiceUnavailable
from precog.models import (
    decide,
    dump_lightgbm,
    dump_skops,
    format_for_algorithm,
    load_runtime,
    served_scores,
)
from precog.registry import (
    HoldoutMetrics,
    ModelMetadata,
    ModelRegistry,
    TrainingReference,
    code_version,
    distribution_reference,
    index_metadata,
    training_data_sha256,
)
from precog.roles import ModelRef, Roles, initial_roles
from precog.settings import Settings
from precog.spec import ModelSpec, PipelineSpec

#: Score differences below this are noise to training: no cut between two scores closer than
#: this is a threshold candidate (see the module docstring).
SCORE_RESOLUTION = 1e-9
#: ROC AUC ranks the holdout scores rounded to this many decimals (near-ties are ties) and,
#: like log loss, is recorded rounded to it, so last-bit differences do not show.
METRIC_DECIMALS = 9
#: LightGBM threads while training: fixed, so the same seed gives the same model bytes.
TRAIN_THREADS = 2
_ROUNDS_ALIASES = ("n_estimators", "num_boost_round", "num_iterations", "num_trees", "num_round")

Log = Callable[[str], None]


@dataclass(frozen=True)
class LabeledFrame:
    """Feature rows of labelled events, in (event time, event id) order."""

    X: np.ndarray
    names: list[str]
    event_ids: list[str]
    event_times: np.ndarray
    y: np.ndarray
    unlabeled: int = 0  # events dropped because no outcome joined


@dataclass(frozen=True)
class TrainedModel:
    """One fitted model, its artifact bytes and everything registration needs."""

    model_spec: ModelSpec
    artifact: bytes
    fields: dict[str, Any]


# --------------------------------------------------------------------------- data


def labeled_frame(spec: PipelineSpec, history_dir: Path) -> LabeledFrame:
    """Read a history (docs/features.md, checked against the spec's schemas) and build its
    labelled feature frame (the one place that depends on the history files and the
    feature engine)."""
    from precog.features import build_training_frame
    from precog.history import read_history

    events, outcomes = read_history(Path(history_dir), spec)
    frame = build_training_frame(spec, events)
    return join_labels(
        frame.X, frame.names, frame.event_ids, frame.event_times, outcomes, spec
    )


def join_labels(
    X: np.ndarray,
    names: list[str],
    event_ids: list[str],
    event_times: np.ndarray,
    outcomes: Iterable[Mapping[str, Any]],
    spec: PipelineSpec,
) -> LabeledFrame:
    """Keep the rows whose event has an outcome; a later ``outcome_time`` wins on duplicates.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> spec = load_spec(SPEC_DIR / "transactions.yaml")
    >>> outs = [{"event_id": "b", "label": 0, "outcome_time": 1},
    ...         {"event_id": "b", "label": 1, "outcome_time": 2}]
    >>> f = join_labels(np.eye(2), ["x", "y"], ["a", "b"], np.array([5, 6]), outs, spec)
    >>> f.event_ids, f.y.tolist(), f.unlabeled
    (['b'], [1], 1)
    """
    key, label_field = spec.outcome.join_key, spec.outcome.label_field
    labels: dict[str, tuple[int, int]] = {}
    for o in outcomes:
        at = int(o.get("outcome_time", 0))
        eid = str(o[key])
        if eid not in labels or at >= labels[eid][0]:
            labels[eid] = (at, int(o[label_field]))
    keep = np.array([e in labels for e in event_ids], dtype=bool)
    kept_ids = [e for e, k in zip(event_ids, keep, strict=True) if k]
    return LabeledFrame(
        X=np.asarray(X)[keep],
        names=list(names),
        event_ids=kept_ids,
        event_times=np.asarray(event_times, dtype=np.int64)[keep],
        y=np.array([labels[e][1] for e in kept_ids], dtype=np.int64),
        unlabeled=int((~keep).sum()),
    )


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


def train_model(
    spec: PipelineSpec,
    model_spec: ModelSpec,
    frame: LabeledFrame,
    holdout: np.ndarray,
    seed: int,
    code: str,
) -> TrainedModel:
    """Fit, evaluate and describe one model of the spec (no I/O)."""
    features = spec.model_features(model_spec)
    cols = [frame.names.index(f) for f in features]
    X = np.ascontiguousarray(frame.X[:, cols])
    train, test = ~holdout, holdout
    artifact = fit_model(model_spec, X[train], frame.y[train], features, seed)
    fmt = format_for_algorithm(model_spec.algorithm)
    scores = served_scores(load_runtime(fmt, artifact, model_spec.model_id), X[test])
    threshold, policy = choose_threshold(frame.y[test], scores, model_spec.target_precision)
    t_train, t_test = frame.event_times[train], frame.event_times[test]
    fields = dict(
        spec=spec.name,
        features=features,
        threshold=threshold,
        threshold_policy=policy,
        training_window_start=int(t_train.min()),
        training_window_end=int(t_train.max()),
        training_rows=int(train.sum()),
        training_positives=int(frame.y[train].sum()),
        training_data_sha256=training_data_sha256(features, X[train], frame.y[train]),
        holdout_start=int(t_test.min()),
        holdout_end=int(t_test.max()),
        holdout_rows=int(test.sum()),
        holdout=holdout_metrics(frame.y[test], scores, threshold),
        params=dict(model_spec.params),
        seed=seed,
        code_version=code,
        reference=TrainingReference(
            features={f: distribution_reference(X[train][:, i]) for i, f in enumerate(features)},
            score=distribution_reference(scores),
        ),
    )
    return TrainedModel(model_spec, artifact, fields)


def train_models(
    spec: PipelineSpec, frame: LabeledFrame, holdout_fraction: float, seed: int, code: str
) -> list[TrainedModel]:
    """Every model of the spec, trained on the same time-based split."""
    holdout = time_split(frame.event_times, holdout_fraction)
    for name, mask in (("training", ~holdout), ("holdout", holdout)):
        classes = set(np.unique(frame.y[mask]).tolist())
        if classes != {0, 1}:
            raise ConfigError(
                f"the {name} part has {int(mask.sum())} events with labels {sorted(classes)};"
                " it needs both classes: simulate a longer history"
            )
    return [train_model(spec, m, frame, holdout, seed, code) for m in spec.models]


# --------------------------------------------------------------------------- the job


def train(
    settings: Settings,
    spec: PipelineSpec,
    history_dir: Path,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    *,
    index: bool = True,
    roles: bool = True,
    log: Log | None = None,
) -> list[ModelMetadata]:
    """Train, register and (``index``) index every model of ``spec``; (``roles``) publish
    initial roles when the spec has none. Services are checked before any work."""
    say = log or (lambda _msg: None)
    es = reachable_elasticsearch(settings) if index else None
    current = _current_roles(settings, spec) if roles else None
    frame = labeled_frame(spec, history_dir)
    say(f"{len(frame.y)} labelled events ({int(frame.y.sum())} positive),"
        f" {frame.unlabeled} without outcome dropped")
    return train_frame(
        settings, spec, frame, holdout_fraction, seed,
        es=es, publish=roles and current is None, log=say,
    )


def train_frame(
    settings: Settings,
    spec: PipelineSpec,
    frame: LabeledFrame,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    *,
    es: Any = None,
    publish: bool = False,
    log: Log | None = None,
) -> list[ModelMetadata]:
    """Train on a labelled frame and register: files first, then the index, then roles."""
    say = log or (lambda _msg: None)
    trained = train_models(spec, frame, holdout_fraction, seed, code_version(settings))
    registry = ModelRegistry(settings.registry_dir)
    metas = [
        registry.register(t.model_spec.model_id, t.model_spec.algorithm, t.artifact, **t.fields)
        for t in trained
    ]
    if es is not None:
        index_all(es, settings, metas)
    if publish:
        initial = _initial_roles(spec, metas)
        _publish(settings, initial)
        say(f"published roles revision 1: leader {initial.leader},"
            f" challengers {', '.join(map(str, initial.challengers)) or 'none'}")
    return metas


def index_all(es: Any, settings: Settings, metas: list[ModelMetadata]) -> None:
    """Index model documents; connection failures become ServiceUnavailable."""
    from elastic_transport import ConnectionError as EsConnectionError
    from elastic_transport import ConnectionTimeout

    for meta in metas:
        try:
            index_metadata(es, settings, meta)
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise ServiceUnavailable(
                "elasticsearch",
                settings.elasticsearch.url,
                f"{meta.ref} is registered in {settings.registry_dir} but not indexed"
                f" ({type(exc).__name__}); run `precog models reindex` when it is back",
            ) from None


def _initial_roles(spec: PipelineSpec, metas: list[ModelMetadata]) -> Roles:
    leader_id = next(m.model_id for m in spec.models if m.role == "leader")
    refs = {m.model_id: ModelRef(m.model_id, m.version) for m in metas}
    challengers = [refs[m.model_id] for m in spec.models if m.model_id != leader_id]
    return initial_roles(
        spec.name, refs[leader_id], challengers, at=_now_ms(), by="precog train",
        reason="initial roles from the spec",
    )


def reachable_elasticsearch(settings: Settings) -> Any:
    """An Elasticsearch client that answered; ServiceUnavailable (the error's type) if not."""
    from precog.io.elasticsearch import elasticsearch_client

    es = elasticsearch_client(settings)
    try:
        es.cluster.health()  # GET / (info) is not in the integ-test-zip distribution
    except Exception as exc:
        raise ServiceUnavailable(
            "elasticsearch", settings.elasticsearch.url, type(exc).__name__
        ) from None
    return es


def _current_roles(settings: Settings, spec: PipelineSpec) -> Roles | None:
    from precog.services.model_control import read_roles

    return read_roles(settings, spec.name)


def _publish(settings: Settings, roles: Roles) -> None:
    from precog.services.model_control import publish_roles

    publish_roles(settings, roles)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
