"""When to retrain: the triggers of ``spec.retraining``, checked against what the pipeline saw.

:func:`fired` is pure: given the time of the last run and the alerts and metrics since, it
names the first trigger that fires, with its evidence. :func:`check` reads those from
Elasticsearch (``{ns}-decisions`` for the last run, ``{ns}-alerts``, ``{ns}-metrics``) and
runs :func:`precog.pipelines.retrain.retrain` when a trigger fired. The run's audit
document is the next check's "last run", so a trigger fires at most once per cool-down,
whichever process checks (``precog retrain watch``, cron ``precog retrain check``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, NotFoundError
from elasticsearch import ConnectionError as EsConnectionError
from precog.pipelines.retrain import retrain
from precog.services.model_control import read_roles

from precog.errors import ConfigError, ServiceUnavailable
from precog.io.elasticsearch import elasticsearch_client
from precog.roles import ModelRef
from precog.settings import Settings
from precog.spec import PipelineSpec, RetrainingSpec, parse_duration

Log = Callable[[str], None]


@dataclass(frozen=True)
class Trigger:
    name: str
    evidence: str


def fired(policy: RetrainingSpec, leader: ModelRef, now_ms: int, last_run_ms: int | None,
          alerts: Iterable[Mapping[str, Any]], metrics: Iterable[Mapping[str, Any]]
          ) -> Trigger | None:
    """The first of ``policy.triggers`` that fires now, or None (also within the cool-down).

    ``alerts`` and ``metrics`` are documents detected / computed after the last run.

    >>> p = RetrainingSpec(triggers=["schedule"], schedule="1d", cooldown="1h")
    >>> fired(p, ModelRef("m", 1), 90_000_000, 0, [], []).name
    'schedule'
    >>> fired(p, ModelRef("m", 1), 90_000_000, 89_000_000, [], []) is None  # cool-down
    True
    """
    since = -1 if last_run_ms is None else last_run_ms
    if last_run_ms is not None and now_ms - last_run_ms < parse_duration(policy.cooldown):
        return None
    alerts = list(alerts)
    for name in policy.triggers:
        if name == "schedule" and (last_run_ms is None
                                   or now_ms - last_run_ms >= parse_duration(policy.schedule)):
            return Trigger(name, "first run" if last_run_ms is None else
                           f"last run at {last_run_ms}, schedule {policy.schedule}")
        if name == "concept_drift":
            for a in alerts:
                if (a.get("kind") == "concept_drift" and a.get("model_id") == leader.model_id
                        and a.get("version") == leader.version
                        and int(a.get("detected_time", 0)) > since):
                    return Trigger(name, f"alert {a.get('alert_id')}: {a.get('message')}")
        if name == "data_drift":
            wanted = set(policy.data_drift_features)
            for a in alerts:
                if (a.get("kind") == "data_drift" and int(a.get("detected_time", 0)) > since
                        and (not wanted or a.get("feature") in wanted)):
                    return Trigger(name, f"alert {a.get('alert_id')}: {a.get('message')}")
        if name in _METRIC_TRIGGERS:
            prefix, measure, what = _METRIC_TRIGGERS[name]
            low = policy.min_f1 if name == "performance" else policy.min_estimated_f1
            for m in metrics:
                f1, n = m.get("f1"), int(m.get("n_labels") or 0)
                if (str(m.get("window", "")).startswith(prefix)
                        and m.get("model_id") == leader.model_id
                        and m.get("version") == leader.version
                        and f1 is not None and n >= policy.min_labels and f1 < low):
                    return Trigger(name, f"leader {leader} {measure} {f1:.4f} < {low} on"
                                   f" {n} {what} ({m.get('window')}, event time"
                                   f" {m.get('event_time')})")
    return None


#: the metric triggers: the metrics window prefix they read, what the F1 is, what n counts
_METRIC_TRIGGERS = {
    "performance": ("last_", "F1", "labels"),
    "estimated_performance": ("estimated_", "estimated F1", "predictions"),
}


def _search(es: Any, settings: Settings, index: str, query: dict[str, Any], sort: str,
            size: int) -> list[dict[str, Any]]:
    try:
        res = es.search(index=settings.index(index), query=query, size=size,
                        sort=[{sort: "desc"}])
    except NotFoundError:
        return []
    except (ApiError, EsConnectionError) as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from None
    return [dict(h["_source"]) for h in res["hits"]["hits"]]


def _leader_metrics(es: Any, settings: Settings, leader: ModelRef, prefix: str,
                    last: int | None) -> list[dict[str, Any]]:
    """The leader's newest metrics documents of the ``prefix`` windows computed after the
    last run (an older one was the evidence of that run, or came before it)."""
    return _search(es, settings, "metrics", {"bool": {"filter": [
        {"term": {"model_id": leader.model_id}}, {"term": {"version": leader.version}},
        {"prefix": {"window": prefix}},
        {"range": {"computed_time": {"gt": last if last is not None else -1}}}]}},
        "computed_time", 5)


def check(settings: Settings, spec: PipelineSpec, *, now_ms: int | None = None,
          log: Log | None = None) -> dict[str, Any] | None:
    """Check the triggers once; run a retrain when one fired. The audit record, or None."""
    say = log or (lambda _m: None)
    policy = spec.retraining
    if not policy.triggers:
        raise ConfigError(f"spec {spec.name} has no retraining triggers: set"
                          " retraining.triggers (schedule, concept_drift, data_drift,"
                          " performance, estimated_performance)")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    roles = read_roles(settings, spec.name)
    if roles is None:
        raise ConfigError(f"{spec.name} has no roles yet: run `precog train` first")
    es = elasticsearch_client(settings)
    runs = _search(es, settings, "decisions", {"bool": {"filter": [
        {"term": {"kind": "retrain"}}, {"term": {"spec": spec.name}}]}}, "evaluated_time", 1)
    last = int(runs[0]["evaluated_time"]) if runs else None
    after = {"range": {"detected_time": {"gt": last if last is not None else -1}}}
    alerts = _search(es, settings, "alerts", after, "detected_time", 100)
    metrics = [doc for name, (prefix, _f, _n) in _METRIC_TRIGGERS.items()
               if name in policy.triggers
               for doc in _leader_metrics(es, settings, roles.leader, prefix, last)]
    trigger = fired(policy, roles.leader, now, last, alerts, metrics)
    if trigger is None:
        say("no retraining trigger fired" + (f" (last run at {last})" if last else ""))
        return None
    say(f"trigger {trigger.name}: {trigger.evidence}")
    return retrain(settings, spec, now - parse_duration(policy.window), now,
                   trigger=f"{trigger.name}: {trigger.evidence}"[:500],
                   max_challengers=policy.max_challengers,
                   recent_ms=parse_duration(policy.recent), log=say)
