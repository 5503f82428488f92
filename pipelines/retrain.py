"""Retraining from the deployment's own topics: new versions, registered as challengers.

``retrain(settings, spec, start_ms, end_ms)``:

1. read the spec's events topic from its first retained record up to the first record at or
   after ``end_ms`` (record timestamps: when the deployment received them), and every
   outcome of ``{ns}.outcomes`` up to its end now;
2. compute the features with the training path of the worker's own featurizer
   (:func:`precog.features.build_training_frame`, one chain per entity in event order) over
   all of those events, so an event's features carry the state its entity had when it was
   served; keep the events the deployment received in ``[start_ms, end_ms)`` that have an
   outcome and passed the worker's checks;
3. train every model of the spec on that frame (the time holdout of ``precog train``),
   score the same holdout with the current leader, register the new versions with the
   data's provenance (topics, offsets, time window; ``training_source``), and add them as
   challengers (never as leader), at most ``max_challengers`` in all;
4. evaluate them on the **last window of joined labels** too: the leader's ``labeled``
   records joined in the ``recent_ms`` before ``end_ms`` (what its online metrics are
   computed on), for the events of the holdout (an event the new versions were trained on
   is left out, and counted): each new version's metric on those events against the
   leader's own served scores of them, paired (who alone was right how often);
5. audit the run in ``{ns}.decisions`` / ``{ns}-decisions`` (kind ``retrain``).

A run with too little data (no events, or a training or holdout part with one class)
registers nothing and is audited as ``skipped`` with the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from precog.pipelines.fitting import holdout_metrics, time_split
from precog.pipelines.train import LabeledFrame, join_labels, train_frame
from precog.services.lifecycle import labelled_records, record_decision
from precog.services.model_control import publish_roles, read_roles

from precog.errors import ConfigError, EventError, PrecogError, ServiceUnavailable
from precog.features import build_training_frame
from precog.io import kafka
from precog.models import decide, served_scores
from precog.registry import ModelMetadata, ModelRegistry
from precog.roles import ModelRef, Roles, add_challenger
from precog.schema_registry import namespace_codec
from precog.settings import Settings
from precog.spec import PipelineSpec
from precog.validation import check_event

Log = Callable[[str], None]
_TIMEOUT = 10.0
BY = "precog retrain"


@dataclass(frozen=True)
class TopicData:
    """The labelled frame built from topics, and where its rows came from."""

    frame: LabeledFrame
    offsets: dict[int, tuple[int, int]]  # partition -> [first, end) of the window's events
    events_read: int
    invalid: int
    source: str  # human-readable provenance, kept in the model metadata


def _ranges(consumer: Any, topic: str, end_ms: int, start_ms: int
            ) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
    parts = kafka.partitions(consumer, topic, _TIMEOUT)
    if parts is None:
        raise ConfigError(f"topic {topic} does not exist: run `precog setup` first")
    marks = kafka.watermarks(consumer, topic, parts, _TIMEOUT)

    def at(ms: int) -> dict[int, int]:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts],
                                           timeout=_TIMEOUT)
        return {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1])
                for tp in found}

    ends, starts = at(end_ms), at(start_ms)
    return {p: (starts[p], ends[p]) for p in parts}, {p: marks[p][0] for p in parts}


def read_topic_data(settings: Settings, spec: PipelineSpec, start_ms: int, end_ms: int,
                    log: Log | None = None) -> TopicData:
    """Steps 1 and 2 of the module docstring."""
    say = log or (lambda _m: None)
    topic = settings.topic(spec.event.topic)
    codec = namespace_codec(settings, spec, spec.event.schema_name)
    consumer = kafka.reader(settings, settings.group("retrain-reader"))
    events: list[dict[str, Any]] = []
    in_window: set[str] = set()
    invalid = 0
    try:
        window, lows = _ranges(consumer, topic, end_ms, start_ms)
        todo = {(topic, p): (OFFSET_BEGINNING, end) for p, (_s, end) in window.items()
                if end > lows[p]}
        for msg in kafka.read_ranges(consumer, todo, idle_timeout=3 * _TIMEOUT, batch=1000):
            try:
                record = codec.decode(msg.value())
            except EventError:
                invalid += 1
                continue
            _, ts = msg.timestamp()
            if check_event(spec, record, ts):
                invalid += 1
                continue
            events.append(record)
            if msg.offset() >= window[msg.partition()][0]:
                in_window.add(str(record[spec.event.id_field]))
        say(f"{len(events)} valid events read from {topic} ({invalid} invalid left out),"
            f" {len(in_window)} of them received in the window")
        outcomes = list(_outcomes(settings, spec, consumer))
        say(f"{len(outcomes)} outcomes read from {settings.topic(spec.outcome.topic)}")
    except (TimeoutError, KafkaException) as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    finally:
        consumer.close()
    full = build_training_frame(spec, events)
    keep = np.array([e in in_window for e in full.event_ids], dtype=bool)
    frame = join_labels(full.X[keep], full.names,
                        [e for e, k in zip(full.event_ids, keep, strict=True) if k],
                        full.event_times[keep], outcomes, spec)
    spans = ", ".join(f"p{p}:{a}-{b}" for p, (a, b) in sorted(window.items()))
    source = (f"topics {topic} [{spans}] (received {start_ms}..{end_ms}), state from offset"
              f" 0; outcomes {settings.topic(spec.outcome.topic)}")
    return TopicData(frame, window, len(events), invalid, source)


def _outcomes(settings: Settings, spec: PipelineSpec, consumer: Any):
    topic = settings.topic(spec.outcome.topic)
    codec = namespace_codec(settings, spec, spec.outcome.schema_name)
    parts = kafka.partitions(consumer, topic, _TIMEOUT)
    if parts is None:
        raise ConfigError(f"topic {topic} does not exist: run `precog setup` first")
    marks = kafka.watermarks(consumer, topic, parts, _TIMEOUT)
    todo = {(topic, p): (OFFSET_BEGINNING, high) for p, (low, high) in marks.items()
            if high > low}
    for msg in kafka.read_ranges(consumer, todo, idle_timeout=3 * _TIMEOUT, batch=1000):
        try:
            yield codec.decode(msg.value())
        except EventError:
            continue


def _leader_on_holdout(registry: ModelRegistry, roles: Roles, frame: LabeledFrame,
                       holdout: np.ndarray) -> dict[str, float] | None:
    """The current leader's holdout metrics on the same rows, at its own threshold."""
    try:
        loaded = registry.load(roles.leader.model_id, roles.leader.version)
    except PrecogError:
        return None
    cols = [frame.names.index(f) for f in loaded.features]
    X = np.ascontiguousarray(frame.X[holdout][:, cols])
    scores = served_scores(loaded.runtime, X)
    return holdout_metrics(frame.y[holdout], scores, loaded.threshold).model_dump()


@dataclass(frozen=True)
class RecentLabels:
    """The leader's joined labels of the last window, for the holdout's events."""

    rows: np.ndarray  # frame row of each event
    leader_scores: np.ndarray  # what the leader served for it
    joined: int  # the leader's joined labels in the window
    trained_on: int  # ...of events the new versions were trained on (left out)
    start_ms: int
    end_ms: int


def recent_labels(settings: Settings, spec: PipelineSpec, roles: Roles, frame: LabeledFrame,
                  holdout: np.ndarray, start_ms: int, end_ms: int) -> RecentLabels:
    """Step 4's events: the leader's labels joined in ``[start_ms, end_ms)`` (the labeled
    topic's record times) whose events are in the holdout, with the leader's scores."""
    row_of = {e: i for i, e in enumerate(frame.event_ids)}
    rows: dict[int, float] = {}
    joined = trained_on = 0
    lead = roles.leader
    for rec in labelled_records(settings, spec, start_ms, end_ms):
        if rec["model_id"] != lead.model_id or int(rec["version"]) != lead.version:
            continue
        joined += 1
        i = row_of.get(str(rec["event_id"]))
        if i is None:
            continue
        if not holdout[i]:
            trained_on += 1
            continue
        rows[i] = float(rec["score"])  # a label joined twice counts once
    order = np.array(sorted(rows), dtype=np.int64)
    return RecentLabels(order, np.array([rows[i] for i in order], dtype=np.float64), joined,
                        trained_on, start_ms, end_ms)


def _recent_row(registry: ModelRegistry, roles: Roles, meta: ModelMetadata, frame: LabeledFrame,
                recent: RecentLabels, metric: str) -> dict[str, Any]:
    """The candidate row of a new version on the last window's joined labels (step 4)."""
    n = int(recent.rows.size)
    y = frame.y[recent.rows]
    where = (f"the leader's {recent.joined} labels joined in {recent.start_ms}..{recent.end_ms}"
             f" ({recent.trained_on} of events it was trained on, left out)")
    row: dict[str, Any] = {
        "model_id": meta.model_id, "version": meta.version, "status": "recent-labels",
        "n": n, "positives": int(y.sum()), "leader_value": float("nan"),
        "value": float("nan"), "gain": float("nan"), "statistic": float("nan"),
        "p_value": float("nan"), "ci_low": float("nan"), "leader_only_right": 0,
        "challenger_only_right": 0}
    if n == 0 or y.min() == y.max():
        row["reason"] = (f"not evaluated on the last window: {n} events of {where}"
                         + (", one class only" if n else ""))
        return row
    leader = registry.load(roles.leader.model_id, roles.leader.version)
    new = registry.load(meta.model_id, meta.version)
    cols = [frame.names.index(f) for f in new.features]
    scores = served_scores(new.runtime, np.ascontiguousarray(frame.X[recent.rows][:, cols]))
    value = float(getattr(holdout_metrics(y, scores, new.threshold), metric))
    lead = float(getattr(holdout_metrics(y, recent.leader_scores, leader.threshold), metric))
    new_right = decide(scores, new.threshold) == y
    lead_right = decide(recent.leader_scores, leader.threshold) == y
    row.update(leader_value=lead, value=value, gain=value - lead,
               leader_only_right=int((lead_right & ~new_right).sum()),
               challenger_only_right=int((new_right & ~lead_right).sum()),
               reason=f"last window {metric} {value:.4f} vs the leader's served {lead:.4f} on"
                      f" {n} events of {where}")
    return row


def _audit(settings: Settings, spec: PipelineSpec, roles: Roles, *, trigger: str,
           start_ms: int, end_ms: int, action: str, reason: str, metric: str,
           rows: list[dict[str, Any]], registered: list[ModelRef], now: int) -> dict[str, Any]:
    did = hashlib.sha256(f"retrain|{spec.name}|{start_ms}|{end_ms}|{now}".encode()).hexdigest()
    record = {
        "decision_id": did[:20], "kind": "retrain", "spec": spec.name, "policy": trigger,
        "action": action, "reason": reason, "evaluated_time": now, "window_start": start_ms,
        "window_end": end_ms, "roles_revision": roles.revision,
        "leader": roles.leader.to_record(),
        "chosen": registered[0].to_record() if registered else None,
        "metric": metric, "margin": 0.0, "test": "holdout", "alpha": 0.0,
        "candidates": rows,
    }
    return record_decision(settings, spec, record)


def retrain(settings: Settings, spec: PipelineSpec, start_ms: int, end_ms: int, *,
            trigger: str = "manual", holdout_fraction: float = 0.2, seed: int = 0,
            max_challengers: int = 3, metric: str = "f1", recent_ms: int = 86_400_000,
            log: Log | None = None) -> dict[str, Any]:
    """Retrain from topics and add the new versions as challengers; the audit record."""
    say = log or (lambda _m: None)
    if end_ms <= start_ms:
        raise ConfigError(f"the window is empty: --since must be before --until"
                          f" ({start_ms} >= {end_ms})")
    now = int(time.time() * 1000)
    roles = read_roles(settings, spec.name)
    if roles is None:
        raise ConfigError(f"{spec.name} has no roles yet: run `precog train` first")
    data = read_topic_data(settings, spec, start_ms, end_ms, say)
    frame = data.frame
    say(f"{len(frame.y)} labelled events in the window ({int(frame.y.sum())} positive),"
        f" {frame.unlabeled} without outcome left out")
    room = max_challengers - len(roles.challengers)
    if room < len(spec.models):
        return _audit(settings, spec, roles, trigger=trigger, start_ms=start_ms, end_ms=end_ms,
                      action="skipped", metric=metric, rows=[], registered=[], now=now,
                      reason=f"{len(roles.challengers)} challengers already; the cap is"
                      f" {max_challengers} and this run would add {len(spec.models)}")
    try:
        metas = train_frame(settings, spec, frame, holdout_fraction, seed, log=say,
                            source=data.source)
    except ConfigError as exc:
        return _audit(settings, spec, roles, trigger=trigger, start_ms=start_ms, end_ms=end_ms,
                      action="skipped", reason=str(exc), metric=metric, rows=[],
                      registered=[], now=now)
    holdout = time_split(frame.event_times, holdout_fraction)
    registry = ModelRegistry(settings.registry_dir)
    leader = _leader_on_holdout(registry, roles, frame, holdout)
    recent = recent_labels(settings, spec, roles, frame, holdout, end_ms - recent_ms, end_ms)
    say(f"last window: {recent.rows.size} of the leader's {recent.joined} joined labels are of"
        f" holdout events ({recent.trained_on} trained on)")
    rows = [r for m in metas for r in (_row(m, leader, metric),
                                       _recent_row(registry, roles, m, frame, recent, metric))]
    new = roles
    for m in metas:
        new = add_challenger(new, ModelRef(m.model_id, m.version), at=now, by=BY,
                             reason=f"retrained ({trigger}) on {data.source}"[:1000])
    publish_roles(settings, new)
    registered = [ModelRef(m.model_id, m.version) for m in metas]
    say("registered as challengers: " + ", ".join(map(str, registered)))
    return _audit(settings, spec, roles, trigger=trigger, start_ms=start_ms, end_ms=end_ms,
                  action="registered", metric=metric, rows=rows, registered=registered,
                  now=now, reason=f"{len(metas)} new versions trained on {len(frame.y)}"
                  f" labelled events of the window; added as challengers")


def _row(meta: ModelMetadata, leader: dict[str, float] | None, metric: str) -> dict[str, Any]:
    value = float(getattr(meta.holdout, metric))
    lead = float(leader[metric]) if leader else float("nan")
    return {"model_id": meta.model_id, "version": meta.version, "status": "registered",
            "reason": f"holdout {metric} {value:.4f} vs the current leader's {lead:.4f} on"
                      f" the same {meta.holdout_rows} events",
            "n": meta.holdout_rows, "positives": int(round(meta.holdout.label_rate
                                                           * meta.holdout_rows)),
            "leader_value": lead, "value": value,
            "gain": value - lead if leader else float("nan"), "statistic": float("nan"),
            "p_value": float("nan"), "ci_low": float("nan"), "leader_only_right": 0,
            "challenger_only_right": 0}
