"""Schema Registry mode: a namespace's schemas in a Confluent-compatible registry.

A namespace listed in ``PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES`` writes the Confluent
wire format (byte 0, the 4-byte schema id, the Avro body) on its topics instead of Avro
single-object encoding, so Kafka Connect, ksqlDB, Flink's ``avro-confluent`` and
confluent-kafka's ``AvroDeserializer`` read them with the registry's URL alone. Subjects
follow the topic names (TopicNameStrategy: ``{topic}-value``). :func:`register_schemas`
(``precog setup``) sets compatibility BACKWARD on every subject and registers each version
of its schema in order, so the registry refuses an incompatible schema before any record
with it reaches the topic. :func:`namespace_codec` is what the worker, the simulator and
the CLI encode and decode with: the schema ids are looked up once, the hot path stays
precog's own encoder with a 5-byte header.

Which schema each topic carries (:func:`topic_schemas`): the spec's event and outcome
schemas on their topics, ``prediction``, ``dead_letter``, ``labeled``, ``metrics``,
``alert``, ``manifest`` and ``model_control`` on theirs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from precog.avro import Codec, SchemaVersion, schema_versions
from precog.errors import ConfigError, ServiceUnavailable, redacted
from precog.settings import Settings
from precog.spec import PipelineSpec

Echo = Callable[[str], None]
COMPATIBILITY = "BACKWARD"

#: data topics (short names, as in :mod:`precog.namespace`) and the schema each carries
DATA_TOPIC_SCHEMAS = {
    "predictions": "prediction",
    "dlq": "dead_letter",
    "labeled": "labeled",
    "metrics": "metrics",
    "alerts": "alert",
    "manifests": "manifest",
    "decisions": "decision",
    # precog.io.kafka.CONTROL_TOPIC (an adapter beside this one: not imported; a unit test
    # keeps the two equal)
    "model-control": "model_control",
}


def subject(topic: str) -> str:
    """The value subject of a topic (Confluent's TopicNameStrategy).

    >>> subject("prod.predictions")
    'prod.predictions-value'
    """
    return f"{topic}-value"


def topic_schemas(settings: Settings, spec: PipelineSpec) -> dict[str, str]:
    """Full topic name -> schema name, for every topic precog writes Avro records to.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> t = topic_schemas(Settings(namespace="d"), load_spec(SPEC_DIR / "transactions.yaml"))
    >>> t["d.events.transactions"], t["d.outcomes"], t["d.outcomes-rekeyed"], t["d.alerts"]
    ('transaction', 'outcome', 'outcome', 'alert')
    >>> t["d.model-control"]
    'model_control'
    
    """
    found = {settings.topic(spec.event.topic): spec.event.schema_name,
             settings.topic(spec.outcome.topic): spec.outcome.schema_name,
             # the join's re-keyed copy of the outcomes (services/agents/join.py)
             settings.topic("outcomes-rekeyed"): spec.outcome.schema_name}
    found.update({settings.topic(t): s for t, s in DATA_TOPIC_SCHEMAS.items()})
    return found


def client(settings: Settings) -> Any:
    """confluent-kafka's ``SchemaRegistryClient`` on ``settings.schema_registry``."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ConfigError("Schema Registry mode needs confluent-kafka's registry client:"
                          " pip install 'confluent-kafka[avro,schemaregistry]'") from exc
    return SchemaRegistryClient(settings.schema_registry.client_config())


def _unavailable(settings: Settings, exc: Exception, name: str = "schema-registry") -> Exception:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServiceUnavailable(name, redacted(settings.schema_registry.url), text[:200])


def _call(settings: Settings, fn: Callable[[], Any], refused: tuple[int, ...] = ()) -> Any:
    """``fn()``; a registry error whose HTTP status is in ``refused`` is raised as it is,
    anything else (transport, 5xx, auth) becomes ServiceUnavailable naming the registry."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        return fn()
    except SchemaRegistryError as exc:
        if exc.http_status_code in refused:
            raise
        raise _unavailable(settings, exc) from None
    except Exception as exc:  # httpx's transport errors (connection refused, TLS, timeout)
        raise _unavailable(settings, exc) from None


def _schema(version: SchemaVersion) -> Any:
    from confluent_kafka.schema_registry import Schema

    # the .avsc as written (logical types included), so consumers see timestamps as such;
    # the binary body is the same with or without them
    return Schema(json.dumps(version.raw), "AVRO")


def register_schemas(settings: Settings, spec: PipelineSpec, *,
                     echo: Echo | None = None) -> dict[str, list[int]]:
    """Compatibility BACKWARD on every subject of the namespace, then each version of its
    schema registered in order (:func:`register_versions`); returns subject -> schema ids.
    """
    say = echo or (lambda _msg: None)
    versions = schema_versions()
    out: dict[str, list[int]] = {}
    for topic, schema_name in topic_schemas(settings, spec).items():
        name = subject(topic)
        out[name] = register_versions(settings, name, versions[schema_name])
        say(f"subject {name}: {schema_name} v{versions[schema_name][-1].version}"
            f" (ids {', '.join(map(str, out[name]))}), compatibility {COMPATIBILITY}")
    return out


def register_versions(settings: Settings, name: str, versions: list[SchemaVersion]) -> list[int]:
    """Compatibility BACKWARD on subject ``name``, then ``versions`` registered in order.

    Idempotent: a version already registered keeps its id. A version the registry refuses
    (not backward compatible with what the subject holds) is a one-line ConfigError naming
    the subject and the version, before any record with it reaches the topic.
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    sr = client(settings)
    _call(settings, lambda: sr.set_compatibility(name, COMPATIBILITY))
    ids = []
    for v in versions:
        try:
            ids.append(int(_call(settings, partial(sr.register_schema, name, _schema(v)),
                                 refused=(409, 422))))
        except SchemaRegistryError as exc:
            raise ConfigError(
                f"schema registry refused {v.label} for subject {name}: not {COMPATIBILITY}"
                f" compatible with its registered versions ({exc.error_message[:200]})"
            ) from None
    return ids


def delete_subjects(settings: Settings, namespace: str | None = None) -> list[str]:
    """Delete every subject of ``namespace`` (default ``settings.namespace``): exactly the
    ``{ns}.<topic>-value`` ones; returns their names."""
    sr = client(settings)
    prefix = f"{namespace or settings.namespace}."
    names = [n for n in _call(settings, sr.get_subjects) if n.startswith(prefix)]
    for n in names:
        _call(settings, partial(sr.delete_subject, n))
    return names


def schema_ids(settings: Settings, topic: str, codec: Codec) -> dict[int, int]:
    """Version -> registry id of each version of ``codec``'s schema under ``topic``'s subject."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    sr = client(settings)
    name = subject(topic)
    ids = {}
    for v in codec.versions:
        try:
            found = _call(settings, partial(sr.lookup_schema, name, _schema(v)), refused=(404,))
        except SchemaRegistryError:
            raise ConfigError(f"subject {name} has no {v.label} in the schema registry at"
                              f" {redacted(settings.schema_registry.url)}: run"
                              f" 'precog setup -n {settings.namespace}'") from None
        ids[v.version] = int(found.schema_id)
    return ids


def namespace_codec(settings: Settings, spec: PipelineSpec, schema_name: str) -> Codec:
    """The codec of ``schema_name`` in ``settings.namespace``'s wire format.

    Single-object: :meth:`Codec.for_schema`. Confluent: the same codec framed with the
    registry's ids, looked up under the first topic that carries the schema (ids belong to
    the schema's content, so every subject holding it gives the same ones).
    """
    codec = Codec.for_schema(schema_name)
    if settings.wire_format != "confluent":
        return codec
    topics = [t for t, s in topic_schemas(settings, spec).items() if s == schema_name]
    if not topics:
        raise ConfigError(f"schema {schema_name!r} is on no topic of namespace"
                          f" {settings.namespace}")
    return codec.confluent(schema_ids(settings, topics[0], codec))


def control_codec(settings: Settings) -> Codec:
    """The model-control topic's codec in the namespace's wire format (no spec needed)."""
    codec = Codec.for_schema("model_control")
    if settings.wire_format != "confluent":
        return codec
    return codec.confluent(schema_ids(settings, settings.topic("model-control"), codec))
