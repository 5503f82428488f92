"""Namespace teardown: find every namespace's resources, list them, drop one namespace exactly.

A namespace ``{ns}`` owns, by name (``Settings.topic/index/redis_key/group``):

* Kafka topics ``{ns}.<name>`` (a namespace has no ``.``, so the prefix is exact), and the
  internal topics Faust names after its app id ``precog-{ns}-worker-...``;
* Elasticsearch indices and index templates ``{ns}-<index>`` for the indices precog has
  (one per file in ``kibana/templates``; ``t1-predictions`` is never ``t1-x``'s);
* Redis keys ``{ns}:...`` (exact: a namespace has no ``:``);
* consumer groups ``precog-{ns}-<group>`` for the groups precog uses (``GROUP_NAMES``:
  Faust's ``worker``, the batch transport's ``score`` and ``index``, ...).

A namespace may contain ``-``, so ``precog-a-b-score`` could be namespace ``a`` with group
``b-score`` or ``a-b`` with ``score``: a group (or Faust topic) belongs to the namespace
whose reading leaves a known group name, and of several, the longest namespace that has
resources elsewhere. Registry entries per namespace are its ``{ns}-models`` index (the
model index) and ``{ns}.model-control`` topic (roles); the artifacts in ``registry_dir``
are shared by every namespace and are never deleted here.

>>> owner_of_topic("t1.predictions"), owner_of_topic("t10.predictions")
('t1', 't10')
>>> owner_of_index("a-b-pipeline-health", ["pipeline-health", "models"])
'a-b'
>>> owner_of_group("precog-a-b-score", known={"a", "a-b"})
'a-b'
>>> owner_of_group("precog-a-worker-__assignor-__leader", known={"a"})
'a'
>>> owner_of_group("precog-stack-health", known=set()) is None
True
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import cast

from precog import resources
from precog.errors import ConfigError, ServiceUnavailable
from precog.settings import Settings

#: The consumer-group names precog uses (``Settings.group(name)``), or their prefixes
#: (``roles-<worker>``, ``bench-<app>``); ``tests/unit/test_teardown.py`` fails when code
#: uses another.
GROUP_NAMES = ("worker", "score", "index", "control-reader", "roles", "replay", "bench",
               "lifecycle-reader", "retrain-reader")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]*")
Echo = Callable[[str], None]


def index_stems() -> list[str]:
    """The index names precog has (``{ns}-<stem>``): one per packaged template."""
    return sorted(p.stem for p in resources.template_dir().glob("*.json"))


def _is_namespace(text: str) -> bool:
    return bool(_NAMESPACE.fullmatch(text))


def owner_of_topic(name: str, known: Collection[str] = ()) -> str | None:
    """The namespace of a topic: ``{ns}.<name>``, or a Faust internal ``precog-{ns}-...``."""
    head, dot, _ = name.partition(".")
    if dot:
        return head if _is_namespace(head) else None
    return owner_of_group(name, known)


def owner_of_index(name: str, stems: Iterable[str]) -> str | None:
    """The namespace of an index or index template ``{ns}-<stem>`` (None: not precog's)."""
    for stem in sorted(stems, key=len, reverse=True):
        head = name.removesuffix(f"-{stem}")
        if head != name and _is_namespace(head):
            return head
    return None


def owner_of_redis_key(key: str) -> str | None:
    """The namespace of a Redis key ``{ns}:...``."""
    head, colon, _ = key.partition(":")
    return head if colon and _is_namespace(head) else None


def owner_of_group(name: str, known: Collection[str] = ()) -> str | None:
    """The namespace of ``precog-{ns}-<group>[-...]`` whose ``<group>`` is a known name;
    of several readings, the longest namespace in ``known``, else the longest."""
    rest = name.removeprefix("precog-")
    if rest == name:
        return None
    readings = [rest[:i] for i, ch in enumerate(rest) if ch == "-" and _is_namespace(rest[:i])
                and any(rest[i + 1:] == g or rest[i + 1:].startswith(f"{g}-")
                        for g in GROUP_NAMES)]
    if not readings:
        return None
    preferred = [ns for ns in readings if ns in known] or readings
    return max(preferred, key=len)


@dataclass
class Resources:
    """What one namespace has in every store."""

    namespace: str
    topics: dict[str, int] = field(default_factory=dict)  # name -> records
    indices: dict[str, int] = field(default_factory=dict)  # name -> documents
    templates: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    redis_keys: int = 0

    @property
    def empty(self) -> bool:
        return not (self.topics or self.indices or self.templates or self.groups
                    or self.redis_keys)

    def summary(self) -> str:
        """One line: what the namespace has.

        >>> print(Resources("t1", {"t1.dlq": 3}, {"t1-models": 2}, ["t1-models"], [], 5)
        ...       .summary())  # doctest: +NORMALIZE_WHITESPACE
        t1: 1 topics (3 records), 1 indices (2 documents), 1 index templates,
        0 consumer groups, 5 Redis keys
        """
        return (f"{self.namespace}: {len(self.topics)} topics "
                f"({sum(self.topics.values())} records), {len(self.indices)} indices "
                f"({sum(self.indices.values())} documents), {len(self.templates)} index "
                f"templates, {len(self.groups)} consumer groups, {self.redis_keys} Redis keys")


# ---------------------------------------------------------------------------- finding
def find(settings: Settings, *, only: str | None = None, timeout: float = 30.0
         ) -> dict[str, Resources]:
    """Every namespace's resources (or only namespace ``only``'s), by namespace."""
    found: dict[str, Resources] = {}

    def of(ns: str) -> Resources:
        return found.setdefault(ns, Resources(ns))

    def keep(ns: str | None) -> bool:
        return ns is not None and (only is None or ns == only)

    stems = index_stems()
    indices, templates = _indices(settings), _templates(settings)
    for name, docs in indices.items():
        if keep(ns := owner_of_index(name, stems)):
            of(ns).indices[name] = docs  # type: ignore[arg-type]
    for name in templates:
        if keep(ns := owner_of_index(name, stems)):
            of(ns).templates.append(name)  # type: ignore[arg-type]
    for ns, count in _redis_counts(settings, only).items():
        of(ns).redis_keys = count
    topics, groups = _kafka_names(settings, timeout)
    # every namespace seen by an exact name, to read precog-{ns}-... names against
    seen = {owner_of_topic(t) for t in topics if "." in t}
    seen |= {owner_of_index(n, stems) for n in [*indices, *templates]}
    known = {ns for ns in seen if ns is not None} | set(found) | ({only} if only else set())
    wanted = [t for t in topics if keep(owner_of_topic(t, known))]
    for name, records in _records(settings, wanted, timeout).items():
        of(owner_of_topic(name, known)).topics[name] = records  # type: ignore[arg-type]
    for g in groups:
        if keep(ns := owner_of_group(g, known)):
            of(ns).groups.append(g)  # type: ignore[arg-type]
    for r in found.values():
        r.templates.sort()
        r.groups.sort()
    return dict(sorted(found.items()))


def _kafka_names(settings: Settings, timeout: float) -> tuple[list[str], list[str]]:
    from confluent_kafka import KafkaException

    from precog.io import kafka

    admin = kafka.admin(settings, log_level=3)
    try:
        topics = sorted(admin.list_topics(timeout=timeout).topics)
        groups = sorted(g.group_id for g in
                        admin.list_consumer_groups().result(timeout=timeout).valid)
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc.args[0])) from exc
    return topics, groups


def _records(settings: Settings, topics: list[str], timeout: float) -> dict[str, int]:
    """Records per topic now (high - low watermark, summed over partitions)."""
    from confluent_kafka import KafkaError, KafkaException

    from precog.io import kafka

    if not topics:
        return {}
    c = kafka.reader(settings, "precog-teardown-reader")  # never subscribes nor commits
    try:
        out = {}
        for t in topics:
            try:
                parts = kafka.partitions(c, t, timeout) or []
                marks = kafka.watermarks(c, t, parts, timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                continue  # deleted since it was listed (another drop, a test's cleanup)
            out[t] = sum(high - low for low, high in marks.values())
        return out
    finally:
        c.close()


def _indices(settings: Settings) -> dict[str, int]:
    from elastic_transport import TransportError

    from precog.io.elasticsearch import elasticsearch_client

    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            rows = cast(list[dict[str, str]], es.cat.indices(
                format="json", h="index,docs.count", expand_wildcards="all").body)
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return {r["index"]: int(r.get("docs.count") or 0) for r in rows}


def _templates(settings: Settings) -> list[str]:
    from elastic_transport import TransportError

    from precog.io.elasticsearch import elasticsearch_client

    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            body = es.indices.get_index_template()
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return [t["name"] for t in body["index_templates"]]


def _redis_counts(settings: Settings, only: str | None) -> dict[str, int]:
    import redis

    from precog.io.redis import redis_client

    client = redis_client(settings, 5.0)
    counts: dict[str, int] = {}
    try:
        for key in client.scan_iter(match=f"{only}:*" if only else None, count=1000):
            ns = owner_of_redis_key(key.decode() if isinstance(key, bytes) else key)
            if ns is not None:
                counts[ns] = counts.get(ns, 0) + 1
    except redis.RedisError as exc:
        raise ServiceUnavailable("redis", settings.redis.url, str(exc)) from exc
    finally:
        client.close()
    return counts


# ---------------------------------------------------------------------------- dropping
@dataclass
class Dropped:
    """What a drop removed, and what it could not."""

    namespace: str
    topics: dict[str, int] = field(default_factory=dict)
    indices: dict[str, int] = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    redis_keys: int = 0
    subjects: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was removed, with counts, then what failed."""
        out = [f"topics: {len(self.topics)} ({sum(self.topics.values())} records)"
               + (f": {', '.join(self.topics)}" if self.topics else ""),
               f"indices: {len(self.indices)} ({sum(self.indices.values())} documents)"
               + (f": {', '.join(self.indices)}" if self.indices else ""),
               f"index templates: {len(self.templates)}",
               f"consumer groups: {len(self.groups)}"
               + (f": {', '.join(self.groups)}" if self.groups else ""),
               f"Redis keys: {self.redis_keys}",
               f"schema registry subjects: {len(self.subjects)}"]
        return out + [f"NOT removed: {f}" for f in self.failed]


def check_droppable(namespace: str, *, force: bool = False, given_as: str = "namespace"
                    ) -> None:
    """A valid namespace name (``given_as``: what an error calls it), and ``prod`` only
    with ``force``."""
    from precog.settings import namespace_problem

    problem = namespace_problem(namespace)
    if problem:
        raise ConfigError(f"bad {given_as} {namespace!r}: {problem}")
    if namespace == "prod" and not force:
        raise ConfigError("refusing to drop namespace 'prod' without --force")


def drop(settings: Settings, namespace: str, *, force: bool = False, timeout: float = 30.0,
         plan: Resources | None = None) -> Dropped:
    """Delete exactly ``namespace``'s topics, indices, index templates, Redis keys and
    consumer groups (``plan``: what :func:`find` found, else found now). A consumer group
    with live members cannot be deleted: it is reported in ``failed``."""
    check_droppable(namespace, force=force)
    res = plan if plan is not None else find(settings, only=namespace, timeout=timeout).get(
        namespace, Resources(namespace))
    done = Dropped(namespace)
    _drop_kafka(settings, res, done, timeout)
    _drop_elasticsearch(settings, res, done)
    done.redis_keys = _drop_redis(settings, namespace)
    _drop_subjects(settings, namespace, done)
    return done


def _drop_subjects(settings: Settings, namespace: str, done: Dropped) -> None:
    """The namespace's Schema Registry subjects (docs/schemas.md); an unreachable registry
    is reported in ``failed``, not an error: a namespace may never have used one."""
    from precog.schema_registry import delete_subjects

    try:
        done.subjects = delete_subjects(settings, namespace)
    except ServiceUnavailable as exc:
        done.failed.append(f"schema registry subjects: {exc}")


def _drop_kafka(settings: Settings, res: Resources, done: Dropped, timeout: float) -> None:
    from confluent_kafka import KafkaException

    from precog.io import kafka

    admin = kafka.admin(settings, log_level=3)
    if res.topics:
        futures = admin.delete_topics(list(res.topics), operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                done.topics[name] = res.topics[name]
            except KafkaException as exc:
                done.failed.append(f"topic {name}: {exc.args[0].str()}")
    if res.groups:
        futures = admin.delete_consumer_groups(res.groups, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                done.groups.append(name)
            except KafkaException as exc:  # e.g. GROUP_NOT_EMPTY: a worker still runs
                done.failed.append(f"consumer group {name}: {exc.args[0].str()}")


def _drop_elasticsearch(settings: Settings, res: Resources, done: Dropped) -> None:
    from elasticsearch import NotFoundError

    from precog.io.elasticsearch import elasticsearch_client

    with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
        for name, docs in res.indices.items():  # explicit names: no wildcard ever
            try:
                es.indices.delete(index=name)
                done.indices[name] = docs
            except NotFoundError:
                pass
        for name in res.templates:
            with contextlib.suppress(NotFoundError):
                es.indices.delete_index_template(name=name)
                done.templates.append(name)


def _drop_redis(settings: Settings, namespace: str) -> int:
    from precog.io.redis import redis_client

    client = redis_client(settings, 5.0)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                removed += int(client.delete(*batch))
                batch = []
        if batch:
            removed += int(client.delete(*batch))
    finally:
        client.close()
    return removed
