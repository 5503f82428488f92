"""Training pipeline: history -> labelled features -> models -> holdout metrics -> registry.

``train(settings, spec, history_dir)`` reads a history written by the simulator (events +
delayed outcomes), builds features with the same code the online path uses, splits
off the last ``holdout_fraction`` of event time as the holdout, fits every model of the
spec on its feature subset, picks each model's decision threshold on the holdout,
registers the models (files, then the ``{ns}-models`` index) and, when the spec has no
roles yet, publishes the initial leader and challengers to ``{ns}.model-control``.

Holdout scores are the served scores (:func:`precog.models.served_scores` of the artifact
as registered), so the metrics describe exactly what the worker computes.

The fitting and the threshold policy are in :mod:`precog.pipelines.fitting`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from precog.pipelines.fitting import (  # noqa: F401 - re-exported for callers
    METRIC_DECIMALS,
    SCORE_RESOLUTION,
    TRAIN_THREADS,
    choose_threshold,
    fit_model,
    holdout_metrics,
    threshold_between,
    time_split,
)

from precog.errors import ConfigError, ServiceUnavailable
from precog.models import (
    format_for_algorithm,
    load_runtime,
    served_scores,
)
from precog.registry import (
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
    initial roles when the spec has none. The history's path, then the services are
    checked before any work; a history without both labels is refused as ``precog history
    check`` refuses it."""
    from precog.history import history_dir as existing_history
    from precog.history import require_trainable

    say = log or (lambda _msg: None)
    existing_history(history_dir)
    es = reachable_elasticsearch(settings) if index else None
    current = _current_roles(settings, spec) if roles else None
    frame = labeled_frame(spec, history_dir)
    require_trainable(Path(history_dir), len(frame.y) + frame.unlabeled, frame.y.tolist())
    say(f"{len(frame.y)} labelled events ({int(frame.y.sum())} positive),"
        f" {frame.unlabeled} without outcome dropped")
    return train_frame(
        settings, spec, frame, holdout_fraction, seed,
        es=es, publish=roles and current is None, log=say,
        source=f"history {Path(history_dir).resolve()}",
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
    source: str = "",
) -> list[ModelMetadata]:
    """Train on a labelled frame and register: files first, then the index, then roles.
    ``source`` (where the frame came from) is kept in each version's metadata."""
    say = log or (lambda _msg: None)
    trained = train_models(spec, frame, holdout_fraction, seed, code_version(settings))
    registry = ModelRegistry(settings.registry_dir)
    metas = [
        registry.register(t.model_spec.model_id, t.model_spec.algorithm, t.artifact, **t.fields,
                          training_source=source)
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
