"""The promotion controller: evaluate the spec's promotion policy once, record it, apply it.

One evaluation (:func:`evaluate`):

1. read the spec's roles (``{ns}.model-control``);
2. the window ends on the last interval boundary; its decision id is a hash of the spec and
   that end. If the ``{ns}-decisions`` index has that id, the decision was made already
   (by this or another controller, before a restart): it is applied, never made again;
3. otherwise read the joined labels of the window from ``{ns}.labeled``, check each
   challenger's health (registry: the artifact loads with its sha256; coverage: it scored
   enough of the leader's labelled events), and :func:`~precog.lifecycle.policy.decide`;
4. record the decision: the ``decision.v1`` record on ``{ns}.decisions`` (keyed by spec,
   acknowledged by the broker) and the document ``{ns}-decisions/<decision_id>``, created
   only if absent (a racing controller's document wins and is the one applied);
5. apply a promotion only if the roles are still the revision it was decided on: a
   restart after the roles were published finds a newer revision and does nothing, so a
   decision never promotes twice.

The labelled window is read from the first record whose timestamp is at or after the
window's start (a labelled record is produced when its outcome joins, after the event),
to the high watermark.

:func:`evaluate_traffic` does the same for the spec's traffic policy
(:mod:`precog.lifecycle.canary`): its evidence is the canary arm's joined labels since the
current step; a start, step, promotion or rollback is applied through the same
revision-checked path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from elasticsearch import ApiError, ConflictError, NotFoundError
from elasticsearch import ConnectionError as EsConnectionError
from precog.services.model_control import publish_roles, read_roles

from precog.errors import ConfigError, PrecogError, ServiceUnavailable
from precog.io import kafka
from precog.io.elasticsearch import elasticsearch_client
from precog.lifecycle.canary import (
    apply_traffic,
    arm_window,
    decide_traffic,
    traffic_decision_id,
    window_end,
)
from precog.lifecycle.policy import (
    Decision,
    LabelledWindow,
    decide,
    decision_id,
    window_bounds,
)
from precog.registry import ModelRegistry
from precog.roles import CANARY_ARM, ModelRef, Roles, promote
from precog.schema_registry import namespace_codec
from precog.settings import Settings
from precog.spec import PipelineSpec

log = logging.getLogger("precog.lifecycle")

DECISIONS_TOPIC = "decisions"
DECISIONS_INDEX = "decisions"
_TIMEOUT = 10.0
BY = "precog lifecycle"


@dataclass(frozen=True)
class Outcome:
    """What one evaluation did."""

    decision: dict[str, Any]  # the decision.v1 record
    made_now: bool  # False: found in the index, made before
    applied: bool  # the roles were changed by this evaluation
    roles: Roles  # the roles after it
    note: str = ""


def labelled_records(settings: Settings, spec: PipelineSpec, start_ms: int,
                     end_ms: int | None = None) -> Iterator[dict[str, Any]]:
    """Decoded ``labeled`` records produced at or after ``start_ms``, up to the end now, or
    up to the first produced at or after ``end_ms``."""
    topic = settings.topic("labeled")
    codec = namespace_codec(settings, spec, "labeled")
    consumer = kafka.reader(settings, settings.group("lifecycle-reader"))
    try:
        parts = kafka.partitions(consumer, topic, _TIMEOUT)
        if parts is None:
            raise ConfigError(f"topic {topic} does not exist: run `precog setup` first")
        highs = kafka.watermarks(consumer, topic, parts, _TIMEOUT)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, start_ms) for p in parts], timeout=_TIMEOUT)
        ends = {p: highs[p][1] for p in parts}
        if end_ms is not None:
            for tp in consumer.offsets_for_times(
                    [TopicPartition(topic, p, end_ms) for p in parts], timeout=_TIMEOUT):
                if tp.offset >= 0:
                    ends[tp.partition] = tp.offset
        ranges = {(topic, tp.partition): (tp.offset, ends[tp.partition])
                  for tp in found if 0 <= tp.offset < ends[tp.partition]}
        for msg in kafka.read_ranges(consumer, ranges, idle_timeout=2 * _TIMEOUT):
            yield codec.decode(msg.value())
    except (TimeoutError, KafkaException) as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    finally:
        consumer.close()


def health(registry: ModelRegistry, spec: PipelineSpec, roles: Roles, window: LabelledWindow,
           min_coverage: float) -> dict[ModelRef, str]:
    """Challengers that must not be promoted, with the reason."""
    bad: dict[ModelRef, str] = {}
    lead = window.labelled(roles.leader)
    for ref in roles.challengers:
        try:
            registry.verify_for(spec, ref.model_id, ref.version)
        except PrecogError as exc:
            bad[ref] = f"registry check failed: {exc}"
            continue
        got = window.labelled(ref)
        if lead and got < min_coverage * lead:
            bad[ref] = (f"scored {got} of the leader's {lead} labelled events"
                        f" (< min_coverage {min_coverage})")
    return bad


def decision_document(record: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The ``{ns}-decisions`` document: the record, NaN as null (JSON has no NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    doc = clean(record)
    doc["namespace"] = namespace
    doc["chosen_model"] = (f"{record['chosen']['model_id']} v{record['chosen']['version']}"
                           if record.get("chosen") else None)
    doc["leader_model"] = f"{record['leader']['model_id']} v{record['leader']['version']}"
    return doc


def _publish(settings: Settings, spec: PipelineSpec, record: dict[str, Any]) -> None:
    topic = settings.topic(DECISIONS_TOPIC)
    producer = Producer(settings.kafka.producer_config(acks="all", **{"enable.idempotence": True}))
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    try:
        value = namespace_codec(settings, spec, "decision").encode(record)
        producer.produce(topic, key=record["spec"].encode(), value=value,
                         on_delivery=delivered)
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    if producer.flush(_TIMEOUT) > 0 or errors:
        why = errors[0].str() if errors else "not acknowledged"
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, f"{topic}: {why}")


def _es_unavailable(settings: Settings, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc))


def find_decision(settings: Settings, did: str) -> dict[str, Any] | None:
    es = elasticsearch_client(settings)
    try:
        return dict(es.get(index=settings.index(DECISIONS_INDEX), id=did)["_source"])
    except NotFoundError:
        return None
    except (ApiError, EsConnectionError) as exc:
        raise _es_unavailable(settings, exc) from None


def record_decision(settings: Settings, spec: PipelineSpec, record: dict[str, Any]
                    ) -> dict[str, Any]:
    """Publish and index ``record``; the decision that ends up in the index is returned."""
    _publish(settings, spec, record)
    es = elasticsearch_client(settings)
    try:
        es.create(index=settings.index(DECISIONS_INDEX), id=record["decision_id"],
                  document=decision_document(record, settings.namespace), refresh="wait_for")
        return record
    except ConflictError:
        found = find_decision(settings, record["decision_id"])
        return found if found is not None else record
    except (ApiError, EsConnectionError) as exc:
        raise _es_unavailable(settings, exc) from None


def _apply(settings: Settings, spec: PipelineSpec, registry: ModelRegistry,
           decision: dict[str, Any], now_ms: int) -> tuple[bool, Roles, str]:
    roles = read_roles(settings, spec.name)
    assert roles is not None
    if decision["action"] != "promote" or decision.get("chosen") is None:
        return False, roles, ""
    if roles.revision != int(decision["roles_revision"]):
        return False, roles, (f"not applied: the roles are at revision {roles.revision}, the"
                              f" decision was made on {decision['roles_revision']}")
    ref = ModelRef.from_record(dict(decision["chosen"]))
    registry.verify_for(spec, ref.model_id, ref.version)
    new = promote(roles, ref, at=now_ms, by=BY,
                  reason=f"decision {decision['decision_id']}: {decision['reason']}"[:1000])
    publish_roles(settings, new)
    return True, new, ""


#: applies a recorded decision: (settings, spec, registry, decision, now_ms) ->
#: (applied, roles after, note)
Applier = Callable[[Settings, PipelineSpec, ModelRegistry, dict[str, Any], int],
                   tuple[bool, Roles, str]]


def _once(settings: Settings, spec: PipelineSpec, did: str, made_before: str, now: int,
          roles: Roles,
          make: Callable[[ModelRegistry], dict[str, Any]], apply_decision: Applier, *,
          apply: bool, say: Callable[[str], None]) -> Outcome:
    """Record-then-apply, once per decision id: a decision found under ``did`` (made before,
    e.g. by a process killed before it applied it) is applied again, not remade; otherwise
    ``make`` decides, the record is kept (the first writer wins) and applied."""
    registry = ModelRegistry(settings.registry_dir)
    found = find_decision(settings, did) if apply else None
    if found is not None:
        say(made_before)
        applied, after, note = apply_decision(settings, spec, registry, found, now)
        return Outcome(found, False, applied, after, note)
    record = make(registry)
    if not apply:
        return Outcome(record, True, False, roles, "dry run: nothing recorded")
    kept = record_decision(settings, spec, record)
    _fault_pause(settings, kept)
    applied, after, note = apply_decision(settings, spec, registry, kept, now)
    return Outcome(kept, kept is record, applied, after, note)


def _current_roles(settings: Settings, spec: PipelineSpec) -> Roles:
    roles = read_roles(settings, spec.name)
    if roles is None:
        raise ConfigError(f"{spec.name} has no roles yet: run `precog train` first")
    return roles


def evaluate(settings: Settings, spec: PipelineSpec, *, now_ms: int | None = None,
             apply: bool = True, echo: Callable[[str], None] | None = None) -> Outcome:
    """One evaluation of ``spec.promotion`` (module docstring). ``apply=False``: decide and
    show, record nothing."""
    say = echo or (lambda _m: None)
    policy = spec.promotion
    if policy.policy == "manual":
        raise ConfigError(f"spec {spec.name} has promotion policy manual: set"
                          " promotion.policy: best-recent in the spec to evaluate it")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    roles = _current_roles(settings, spec)
    start, end = window_bounds(policy, now)

    def make(registry: ModelRegistry) -> dict[str, Any]:
        say(f"reading the joined labels of {settings.topic('labeled')} since {start}")
        window = LabelledWindow.from_records(labelled_records(settings, spec, start), start, end)
        say(f"{len(window.event_ids)} labelled events in the window")
        unhealthy = health(registry, spec, roles, window, policy.min_coverage)
        decision: Decision = decide(policy, roles, window, now_ms=now, unhealthy=unhealthy)
        return decision.to_record()

    did = decision_id(spec.name, end)
    return _once(settings, spec, did, f"decision {did} for the window ending {end} was made"
                 " before: applying it", now, roles, make, _apply, apply=apply, say=say)


def _apply_traffic(settings: Settings, spec: PipelineSpec, registry: ModelRegistry,
                   decision: dict[str, Any], now_ms: int) -> tuple[bool, Roles, str]:
    roles = read_roles(settings, spec.name)
    assert roles is not None
    if decision["action"] == "keep":
        return False, roles, ""
    if roles.revision != int(decision["roles_revision"]):
        return False, roles, (f"not applied: the roles are at revision {roles.revision}, the"
                              f" decision was made on {decision['roles_revision']}")
    if decision.get("chosen") and decision["action"] in ("start", "step", "promote"):
        ref = ModelRef.from_record(dict(decision["chosen"]))
        registry.verify_for(spec, ref.model_id, ref.version)
    new = apply_traffic(spec.traffic, roles, decision, now_ms=now_ms)
    if new is None:
        return False, roles, ""
    publish_roles(settings, new)
    return True, new, ""


def evaluate_traffic(settings: Settings, spec: PipelineSpec, *, now_ms: int | None = None,
                     apply: bool = True, echo: Callable[[str], None] | None = None) -> Outcome:
    """One evaluation of ``spec.traffic`` (module docstring). ``apply=False``: decide and
    show, record nothing."""
    say = echo or (lambda _m: None)
    policy = spec.traffic
    now = int(time.time() * 1000) if now_ms is None else now_ms
    roles = _current_roles(settings, spec)
    end = window_end(policy, now)

    def make(_registry: ModelRegistry) -> dict[str, Any]:
        start = roles.traffic.since if roles.traffic is not None else end
        records: list[dict[str, Any]] = []
        if roles.traffic is not None and roles.traffic.policy == "canary":
            say(f"reading the canary arm's joined labels of {settings.topic('labeled')} since"
                f" {start}")
            records = list(labelled_records(settings, spec, start))
        window = arm_window(records, CANARY_ARM, start, max(start, end))
        return decide_traffic(policy, roles, window, now_ms=now).to_record()

    did = traffic_decision_id(spec.name, end)
    return _once(settings, spec, did, f"traffic decision {did} for the interval ending {end}"
                 " was made before: applying it", now, roles, make, _apply_traffic,
                 apply=apply, say=say)


def _fault_pause(settings: Settings, decision: dict[str, Any]) -> None:
    """Fault tests only: wait between recording and applying (``PRECOG_LIFECYCLE_FAULT_PAUSE_
    AFTER_RECORD``, 0 by default), so a test can kill -9 the process at that point."""
    pause = settings.lifecycle.fault_pause_after_record
    if pause > 0:
        log.warning("FAULT HOOK: decision %s recorded, not applied; pausing %.0f s",
                    decision["decision_id"], pause)
        time.sleep(pause)


def recent_decisions(settings: Settings, spec: str | None = None, limit: int = 20
                     ) -> list[dict[str, Any]]:
    """The newest decisions of the namespace (documents of ``{ns}-decisions``)."""
    es = elasticsearch_client(settings)
    query: dict[str, Any] = {"term": {"spec": spec}} if spec else {"match_all": {}}
    try:
        res = es.search(index=settings.index(DECISIONS_INDEX), query=query, size=limit,
                        sort=[{"evaluated_time": "desc"}])
    except NotFoundError:
        return []
    except (ApiError, EsConnectionError) as exc:
        raise _es_unavailable(settings, exc) from None
    return [dict(h["_source"]) for h in res["hits"]["hits"]]
