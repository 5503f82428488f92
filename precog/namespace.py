"""Namespace setup: a namespace's Kafka topics, index templates and indices, idempotently.

Topics are ``{ns}.<name>``: the spec's event topic plus predictions, dlq, outcomes, labeled,
metrics, alerts, manifests (``settings.kafka.partitions`` partitions each) and model-control
(one partition, compacted). Index templates come from ``kibana/templates/*.json``; each file
is a composable template body whose ``index_patterns`` carry the placeholder ``{ns}``, applied
as ``{ns}-<file stem>``; then each index ``{ns}-<file stem>`` is created (empty, mapped by its
template), so Kibana's data views have every field before the first document arrives.

>>> from precog.settings import Settings
>>> from precog.spec import SPEC_DIR, load_spec
>>> topics = topics_for(Settings(namespace="demo"), load_spec(SPEC_DIR / "transactions.yaml"))
>>> topics["model-control"]
TopicSpec(name='demo.model-control', partitions=1, config={'cleanup.policy': 'compact'})
>>> sorted(t.name for t in topics.values())[:3]
['demo.alerts', 'demo.decisions', 'demo.dlq']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precog import resources
from precog.errors import ConfigError, ServiceUnavailable
from precog.io.kafka import CONTROL_TOPIC
from precog.settings import Settings
from precog.spec import PipelineSpec

TEMPLATE_DIR = resources.template_dir()
PLACEHOLDER = "{ns}"

#: Data topics every namespace has besides the spec's event topic.
#: outcomes re-keyed by the join agent (internal: nothing outside precog writes it)
REKEYED_OUTCOMES_TOPIC = "outcomes-rekeyed"
DATA_TOPICS = ("predictions", "dlq", "outcomes", "labeled", "metrics", "alerts", "manifests",
               "decisions")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: full name, partitions, topic-level configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topics_for(settings: Settings, spec: PipelineSpec) -> dict[str, TopicSpec]:
    """The namespace's topics by short name (``"predictions"``, ``"events.transactions"``...)."""
    parts = settings.kafka.partitions
    # explicit retention: the broker's default (7 days, by record timestamp) would delete
    # the history a replay reads, records with old event times first
    retention = {"retention.ms": str(settings.kafka.retention_ms)}
    topics = {
        name: TopicSpec(settings.topic(name), parts, dict(retention))
        for name in (spec.event.topic, *DATA_TOPICS)
    }
    # the join's internal repartition topic: outcomes re-keyed by join key with murmur2,
    # whatever partitioner their producer used (services/agents/join.py); its records keep
    # the outcomes' own timestamps, so it keeps history like the topic it copies
    topics[REKEYED_OUTCOMES_TOPIC] = TopicSpec(
        settings.topic(REKEYED_OUTCOMES_TOPIC), parts, dict(retention)
    )
    topics[CONTROL_TOPIC] = TopicSpec(
        settings.topic(CONTROL_TOPIC), 1, {"cleanup.policy": "compact"}
    )
    return topics


def render_template(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The template body with every ``{ns}`` in its strings and keys (aliases) replaced.

    >>> render_template({"index_patterns": ["{ns}-alerts"], "priority": 200}, "t1")
    {'index_patterns': ['t1-alerts'], 'priority': 200}
    """
    if isinstance(body, dict):
        return {k.replace(PLACEHOLDER, namespace): render_template(v, namespace)
                for k, v in body.items()}
    if isinstance(body, list):
        return [render_template(v, namespace) for v in body]  # type: ignore[return-value]
    if isinstance(body, str):
        return body.replace(PLACEHOLDER, namespace)  # type: ignore[return-value]
    return body


def load_templates(settings: Settings, template_dir: Path = TEMPLATE_DIR) -> dict[str, dict]:  # type: ignore[type-arg]
    """``{ns}-<stem>`` -> rendered body, for every ``*.json`` in ``template_dir``."""
    found = {}
    for path in sorted(template_dir.glob("*.json")) if template_dir.is_dir() else []:
        try:
            body = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if PLACEHOLDER not in json.dumps(body.get("index_patterns", [])):
            raise ConfigError(f"{path}: index_patterns must contain the placeholder {PLACEHOLDER}")
        found[settings.index(path.stem)] = render_template(body, settings.namespace)
    return found


def template_dir_problem(template_dir: Path) -> str | None:
    """What makes ``template_dir`` unusable for setup (missing, not a directory, no
    ``*.json``), or None.

    >>> template_dir_problem(TEMPLATE_DIR) is None
    True
    >>> template_dir_problem(Path("/nonexistent"))
    'no such directory'
    """
    if not template_dir.exists():
        return "no such directory"
    if not template_dir.is_dir():
        return "not a directory"
    if not any(template_dir.glob("*.json")):
        return "no index templates (*.json) in it"
    return None


def ensure_topics(settings: Settings, spec: PipelineSpec, *, echo: Echo | None = None,
                  timeout: float = 30.0) -> list[str]:
    """Create the namespace's missing topics; returns the names created (existing ones: none)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from precog.io import kafka

    say = echo or (lambda _msg: None)
    wanted = topics_for(settings, spec)
    admin = kafka.admin(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc.args[0])) from exc
    missing = [t for t in wanted.values() if t.name not in existing]
    for t in wanted.values():
        if t.name in existing:
            say(f"topic {t.name}: already there")
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t.name, t.partitions, settings.kafka.replication_factor, config=t.config)
         for t in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
            created.append(name)
            say(f"topic {name}: created")
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ServiceUnavailable("kafka", settings.kafka.bootstrap,
                                         f"cannot create {name}: {err.str()}") from exc
            say(f"topic {name}: already there")
    return sorted(created)


def apply_index_templates(settings: Settings, template_dir: Path = TEMPLATE_DIR, *,
                          echo: Echo | None = None) -> list[str]:
    """Put every template of ``template_dir`` as ``{ns}-<stem>``; returns the names applied."""
    from elasticsearch import ApiError, TransportError

    from precog.io.elasticsearch import elasticsearch_client

    say = echo or (lambda _msg: None)
    templates = load_templates(settings, template_dir)
    if not templates:
        say(f"index templates: none in {template_dir}")
        return []
    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            for name, body in templates.items():
                existed = bool(es.indices.exists_index_template(name=name))
                es.indices.put_index_template(name=name, **body)
                say(f"index template {name}: {'updated' if existed else 'created'}")
    except ApiError as exc:
        raise ConfigError(f"index template rejected by Elasticsearch: {exc}") from exc
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return list(templates)


def index_stems(template_dir: Path = TEMPLATE_DIR) -> list[str]:
    """The index names (``{ns}-<stem>``) setup creates: one per template file.

    >>> index_stems()  # doctest: +NORMALIZE_WHITESPACE
    ['alerts', 'decisions', 'metrics', 'models', 'pipeline-health', 'predictions',
     'replay-compare']
    """
    return [p.stem for p in sorted(template_dir.glob("*.json"))] if template_dir.is_dir() else []


def ensure_indices(settings: Settings, template_dir: Path = TEMPLATE_DIR, *,
                   echo: Echo | None = None) -> list[str]:
    """Create the namespace's missing indices (their templates must be in place); returns
    the names created. An existing index, and its documents, is left as it is."""
    from elasticsearch import ApiError, TransportError

    from precog.io.elasticsearch import elasticsearch_client

    say = echo or (lambda _msg: None)
    created = []
    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            for name in (settings.index(stem) for stem in index_stems(template_dir)):
                if es.indices.exists(index=name):
                    say(f"index {name}: already there")
                    continue
                try:
                    es.indices.create(index=name)
                except ApiError as exc:
                    if exc.error != "resource_already_exists_exception":
                        raise
                    say(f"index {name}: already there")  # a concurrent setup made it
                    continue
                created.append(name)
                say(f"index {name}: created")
    except ApiError as exc:
        raise ConfigError(f"index rejected by Elasticsearch: {exc}") from exc
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return created


def setup_namespace(settings: Settings, spec: PipelineSpec, *, echo: Echo | None = None,
                    template_dir: Path = TEMPLATE_DIR) -> None:
    """Topics, index templates and indices of ``settings.namespace``; safe to run any number
    of times. The templates are read first: a directory without any (or a broken one)
    raises :class:`ConfigError` before anything is created."""
    problem = template_dir_problem(template_dir)
    if problem:
        raise ConfigError(f"index templates {template_dir}: {problem}")
    load_templates(settings, template_dir)  # every file is valid JSON with the placeholder
    ensure_topics(settings, spec, echo=echo)
    apply_index_templates(settings, template_dir, echo=echo)
    ensure_indices(settings, template_dir, echo=echo)


def drop_namespace(settings: Settings, *, force: bool = False, timeout: float = 30.0) -> None:
    """Delete exactly what ``settings.namespace`` owns: topics, indices, templates, Redis keys
    and consumer groups (:func:`precog.teardown.drop`). For test and replay namespaces;
    ``prod`` only with ``force=True``.
    """
    from precog.teardown import drop

    drop(settings, settings.namespace, force=force, timeout=timeout)
