"""Work across two namespaces: another namespace's settings, copying roles, comparing them."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from precog.avro import Codec
from precog.errors import ConfigError, ServiceUnavailable
from precog.io.kafka import CONTROL_TOPIC
from precog.replay.compare import CompareReport, compare, documents, latest_outcomes
from precog.replay.request import check_distinct
from precog.replay.runner.topics import count_topic, read_topic
from precog.roles import Roles
from precog.settings import Settings, namespace_problem
from precog.spec import PipelineSpec


def namespace_settings(base: Settings, namespace: str, option: str = "namespace") -> Settings:
    """``base`` with another namespace (validated like ``PRECOG_NAMESPACE``); ``option``: the
    command-line option it came from, which an error names."""
    problem = namespace_problem(namespace)
    if problem:
        raise ConfigError(f"bad {option} {namespace!r}: {problem}")
    return base.model_copy(update={"namespace": namespace})


def copy_roles(source: Settings, target: Settings, spec: PipelineSpec, *, by: str = "replay",
               at: int | None = None) -> Roles:
    """Publish ``source``'s current roles of ``spec`` on ``target``'s model-control topic.

    The copy gets a revision above the target's current one (workers only move forward);
    afterwards the target's roles change independently (``precog models ...`` with
    ``PRECOG_NAMESPACE`` set to the target).
    """
    from precog.namespace import ensure_topics
    from precog.services.model_control import publish_roles, read_roles

    check_distinct(source, target)
    roles = read_roles(source, spec.name)
    if roles is None:
        raise ConfigError(f"{source.topic(CONTROL_TOPIC)} has no roles for {spec.name}")
    ensure_topics(target, spec)
    existing = read_roles(target, spec.name)
    revision = max(roles.revision, existing.revision + 1) if existing else roles.revision
    copy = replace(roles, revision=revision, updated_time=at or int(time.time() * 1000),
                   updated_by=by, reason=f"copied from {source.namespace} revision "
                                         f"{roles.revision}")
    publish_roles(target, copy)
    return copy


def compare_namespaces(left: Settings, right: Settings, spec: PipelineSpec, *, top: int = 10,
                       index_into: Settings | None = None,
                       now_ms: int | None = None) -> CompareReport:
    """Join both namespaces' predictions by event id (read from their predictions topics);
    with ``index_into``, write the report's documents into its ``{ns}-replay-compare``."""
    pred_codec = Codec.for_schema("prediction")
    out_codec = Codec.for_schema(spec.outcome.schema_name)

    def side(s: Settings) -> tuple[list[dict[str, Any]], dict[str, int], int]:
        preds = [pred_codec.decode(m.value()) for m in read_topic(s, "predictions", right)]
        outs = [out_codec.decode(m.value()) for m in read_topic(s, spec.outcome.topic, right)]
        labels = latest_outcomes(outs, spec.outcome.join_key, spec.outcome.label_field)
        return preds, labels, count_topic(s, "dlq", right)

    lp, lo, ld = side(left)
    rp, ro, rd = side(right)
    report = compare(lp, rp, lo, ro, left=left.namespace, right=right.namespace, top=top,
                     dead_letters=(ld, rd))
    if index_into is not None:
        index_report(index_into, report, now_ms or int(time.time() * 1000))
    return report


def index_report(settings: Settings, report: CompareReport, computed_time: int) -> int:
    """Bulk-write the report's documents into ``{ns}-replay-compare``; returns the count."""
    from elasticsearch import ApiError, TransportError, helpers

    from precog.io.elasticsearch import elasticsearch_client
    from precog.namespace import apply_index_templates

    apply_index_templates(settings)  # the strict mapping must exist before the first write
    index = settings.index("replay-compare")
    actions = [{"_op_type": "index", "_index": index, "_id": i, "_source": d}
               for i, d in documents(report, computed_time)]
    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            ok, _ = helpers.bulk(es, actions, refresh="wait_for")
    except (ApiError, helpers.BulkIndexError) as exc:
        raise ConfigError(f"{index}: documents rejected: {str(exc)[:300]}") from exc
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return int(ok)
