"""The one settings object: every knob precog reads, from ``PRECOG_*`` environment variables.

Nested sections map to ``PRECOG_<SECTION>_<FIELD>``, e.g. ``PRECOG_KAFKA_BOOTSTRAP``,
``PRECOG_REDIS_URL``, ``PRECOG_ELASTICSEARCH_PASSWORD``. Nothing else in precog reads
``os.environ``: take a :class:`Settings` (or :func:`get_settings`) and pass it down.

Over 400 lines on purpose: one settings object (docs STYLE, habit 3), every section beside
the validators that tie them together (client addresses that follow the stack's ports).

>>> s = Settings(namespace="parallel")
>>> s.topic("predictions")
'parallel.predictions'
>>> s.index("predictions")
'parallel-predictions'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from precog.errors import ConfigError

#: Default ports of the local stack (:class:`StackSettings`, ``PRECOG_STACK_*_PORT``);
#: deliberately not the services' defaults, so a system-wide Kafka, Redis or Elasticsearch on
#: the machine is never touched by accident.
LOCAL_KAFKA_PORT = 19092
LOCAL_KAFKA_CONTROLLER_PORT = 19093
LOCAL_REDIS_PORT = 16379
LOCAL_ELASTICSEARCH_PORT = 19200
LOCAL_ELASTICSEARCH_TRANSPORT_PORT = 19300
LOCAL_SCHEMA_REGISTRY_PORT = 18081
#: where Apicurio Registry (the local stack's) serves the Confluent-compatible API
CCOMPAT_PATH = "/apis/ccompat/v7"

#: Defaults of the secure stack (``PRECOG_STACK_SECURE=true``, docs/security.md): its own home
#: and ports, so it runs beside the plain stack.
SECURE_STACK_DEFAULTS: dict[str, object] = {
    "home": Path(".precog/stack-secure"),
    "kafka_port": 19192,
    "kafka_controller_port": 19193,
    "redis_port": 16479,
    "elasticsearch_port": 19201,
    "elasticsearch_transport_port": 19301,
    "schema_registry_port": 18181,
}


class KafkaSettings(BaseModel):
    """Kafka connection; security options are passed to every client."""

    bootstrap: str = Field(f"127.0.0.1:{LOCAL_KAFKA_PORT}", description="bootstrap.servers")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client key (mutual TLS)")
    partitions: int = Field(4, ge=1, description="partitions of the namespace's data topics")
    retention_ms: int = Field(
        -1, ge=-1,
        description="retention.ms of the data topics; -1 keeps everything (replay reads history)",
    )
    replication_factor: int = Field(1, ge=1)

    def confluent_config(self) -> dict[str, str]:
        """Client configuration for confluent-kafka (librdkafka property names)."""
        cfg: dict[str, str] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            cfg["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            cfg["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            cfg["ssl.key.location"] = str(self.ssl_keyfile)
        return cfg

    def producer_config(self, **extra: str | int | bool) -> dict[str, str | int | bool]:
        """confluent-kafka producer configuration: :meth:`confluent_config` + murmur2.

        librdkafka partitions by CRC32 unless told otherwise; the Java client, Kafka
        Streams and the worker's own (Faust/aiokafka) producer use murmur2. Every producer
        of the project uses murmur2, so a record keyed by event id lands on the same
        partition whoever produced it (the outcome join relies on it).

        >>> KafkaSettings().producer_config(acks="all")["partitioner"]
        'murmur2_random'
        """
        return {**self.confluent_config(), "partitioner": "murmur2_random", **extra}


class RedisSettings(BaseModel):
    """Redis online feature store. Use ``rediss://`` for TLS."""

    url: str = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: Path | None = None
    state_ttl_seconds: int = Field(90 * 24 * 3600, ge=60, description="TTL of entity state")


class ElasticsearchSettings(BaseModel):
    """Elasticsearch for predictions, metrics, alerts, pipeline health and the model index."""

    url: str = f"http://127.0.0.1:{LOCAL_ELASTICSEARCH_PORT}"
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``Elasticsearch(...)`` / ``AsyncElasticsearch(...)``."""
        kw: dict[str, object] = {"hosts": [self.url], "request_timeout": self.request_timeout}
        if self.username and self.password:
            kw["basic_auth"] = (self.username, self.password.get_secret_value())
        if self.api_key:
            kw["api_key"] = self.api_key.get_secret_value()
        if self.url.startswith("https"):
            kw["verify_certs"] = self.verify_certs
            if self.ca_certs:
                kw["ca_certs"] = str(self.ca_certs)
        return kw


class SchemaRegistrySettings(BaseModel):
    """A Confluent-compatible Schema Registry, and which namespaces use its wire format.

    >>> r = SchemaRegistrySettings(confluent_namespaces=["prod"])
    >>> r.wire_format("prod"), r.wire_format("parallel")
    ('confluent', 'single-object')
    """

    url: str = Field(f"http://127.0.0.1:{LOCAL_SCHEMA_REGISTRY_PORT}{CCOMPAT_PATH}",
                     description="base URL of the Confluent API (Apicurio: .../apis/ccompat/v7)")
    username: str | None = Field(None, description="HTTP basic auth user")
    password: SecretStr | None = Field(None, description="HTTP basic auth password")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify an https registry")
    confluent_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="namespaces whose topics carry the Confluent wire format (byte 0 + schema id);"
        " '*' for all; the others keep Avro single-object encoding. Comma-separated in the env",
    )

    @field_validator("confluent_namespaces", mode="before")
    @classmethod
    def _split_names(cls, v: object) -> object:
        return [n.strip() for n in v.split(",") if n.strip()] if isinstance(v, str) else v

    def wire_format(self, namespace: str) -> Literal["single-object", "confluent"]:
        """The wire format of ``namespace``'s topics."""
        names = self.confluent_namespaces
        return "confluent" if namespace in names or "*" in names else "single-object"

    def client_config(self) -> dict[str, str]:
        """Configuration for confluent-kafka's ``SchemaRegistryClient``."""
        cfg = {"url": self.url}
        if self.username:
            secret = self.password.get_secret_value() if self.password else ""
            cfg["basic.auth.user.info"] = f"{self.username}:{secret}"
        if self.ssl_cafile:
            cfg["ssl.ca.location"] = str(self.ssl_cafile)
        return cfg


class StackSettings(BaseModel):
    """The local stack: where it keeps downloads, data and logs, and the ports it listens on.

    A second, disposable stack runs beside the first with its own ``home`` and ports
    (docs/stack.md). Client addresses that are not given explicitly follow these ports.

    >>> StackSettings(kafka_port=29092).kafka_bootstrap
    '127.0.0.1:29092'
    >>> StackSettings().ports("elasticsearch")
    (19200, 19300)
    """

    home: Path = Field(Path(".precog/stack"), description="data, logs and pid files")
    cache: Path = Field(Path.home() / ".cache" / "precog", description="downloaded jars and zips")
    kafka_version: str = "3.9.1"
    elasticsearch_version: str = "8.15.5"
    elasticsearch_heap: str = "1g"
    kafka_heap: str = "768m"
    apicurio_version: str = Field("2.4.2.Final", description="Apicurio Registry (schema registry)")
    schema_registry_heap: str = "256m"
    kafka_port: int = Field(LOCAL_KAFKA_PORT, ge=1, le=65535, description="Kafka PLAINTEXT")
    kafka_controller_port: int = Field(
        LOCAL_KAFKA_CONTROLLER_PORT, ge=1, le=65535, description="Kafka KRaft controller"
    )
    redis_port: int = Field(LOCAL_REDIS_PORT, ge=1, le=65535)
    elasticsearch_port: int = Field(LOCAL_ELASTICSEARCH_PORT, ge=1, le=65535, description="HTTP")
    elasticsearch_transport_port: int = Field(
        LOCAL_ELASTICSEARCH_TRANSPORT_PORT, ge=1, le=65535, description="node-to-node transport"
    )
    schema_registry_port: int = Field(
        LOCAL_SCHEMA_REGISTRY_PORT, ge=1, le=65535, description="Schema Registry HTTP"
    )
    secure: bool = Field(
        False, description="authentication and TLS on every service (docs/security.md); home "
        "and ports not given default to SECURE_STACK_DEFAULTS"
    )

    @model_validator(mode="before")
    @classmethod
    def _secure_defaults(cls, data: object) -> object:
        """A secure stack not given a home or ports gets its own, beside the plain stack.

        >>> s = StackSettings(secure=True)
        >>> str(s.home), s.kafka_bootstrap
        ('.precog/stack-secure', '127.0.0.1:19192')
        >>> s.redis_url, s.elasticsearch_url
        ('rediss://127.0.0.1:16479/0', 'https://127.0.0.1:19201')
        """
        if isinstance(data, dict) and str(data.get("secure", "")).lower() in ("1", "true",
                                                                               "yes", "on"):
            return {**SECURE_STACK_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _ports_differ(self) -> StackSettings:
        ports = [p for s in ("kafka", "elasticsearch", "redis", "schema-registry")
                 for p in self.ports(s)]
        if len(set(ports)) != len(ports):
            raise ValueError(f"the stack's ports must all differ, got {ports}")
        return self

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        scheme = "rediss" if self.secure else "redis"
        return f"{scheme}://127.0.0.1:{self.redis_port}/0"

    @property
    def elasticsearch_url(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://127.0.0.1:{self.elasticsearch_port}"

    @property
    def schema_registry_url(self) -> str:
        return f"http://127.0.0.1:{self.schema_registry_port}{CCOMPAT_PATH}"

    def ports(self, service: str) -> tuple[int, ...]:
        """The ports ``service`` (kafka, elasticsearch, redis, schema-registry) listens on,
        main one first."""
        return {
            "kafka": (self.kafka_port, self.kafka_controller_port),
            "elasticsearch": (self.elasticsearch_port, self.elasticsearch_transport_port),
            "redis": (self.redis_port,),
            "schema-registry": (self.schema_registry_port,),
        }[service]


class ScoreSettings(BaseModel):
    """The score agent's micro-batching."""

    batch_size: int = Field(
        2000, ge=1, description="events per batch at most (a backlog fills it; at low rates a "
        "batch is what is queued): 2000 measured 35-36k events/s and p99 70-106 ms at 18,000/s "
        "against 500's 26-28k and 240-2,041 ms (docs/benchmarks.md round 9)"
    )
    batch_timeout: float = Field(
        0.005, gt=0, description="seconds a consume call waits for a first event when none "
        "is queued (at least 0.1); a batch takes what is queued and never waits for more"
    )
    inflight_batches: int = Field(
        1, ge=1, description="batches in flight at once: the next batch reads its states and "
        "is featurized while the last one waits for Kafka's acks and its Redis write "
        "(docs/scoring.md \"Batches in flight\": for Redis and Kafka across a network; on one "
        "2-core machine 1 measured better at the default batch size)"
    )


class LightGBMSettings(BaseModel):
    """How LightGBM models score (docs/models.md, "The compiled LightGBM scorer")."""

    compiled: bool = Field(
        True, description="score with the model compiled to native code (tl2cgen + gcc) when "
        "it is bit-for-bit Booster.predict on a probe batch; false keeps the Booster"
    )
    cache: Path = Field(Path.home() / ".cache" / "precog" / "lightgbm",
                        description="compiled models, one directory per artifact SHA-256")


class IndexSettings(BaseModel):
    """The index agent's bulk writes to Elasticsearch."""

    batch_size: int = Field(1000, ge=1, description="predictions per batch")
    batch_timeout: float = Field(
        0.5, gt=0, description="seconds a consume call waits for a first prediction when "
        "none is queued (at least 0.1); a batch takes what is queued"
    )
    request_docs: int = Field(500, ge=1, description="documents per bulk request")
    inflight_batches: int = Field(
        2, ge=1, description="batches being written at once; the next batch is decoded and "
        "built while earlier ones are in Elasticsearch (1 = one batch at a time)"
    )
    initial_backoff: float = Field(0.5, gt=0)


class ServeSettings(BaseModel):
    """``precog serve``: the synchronous REST front ends (docs/serving.md)."""

    host: str = Field("127.0.0.1", description="address the HTTP server binds")
    port: int = Field(8080, ge=1, le=65535)
    api_keys: SecretStr | None = Field(
        None, description="comma-separated API keys; a request carries one as X-API-Key or"
        " Authorization: Bearer; without any key configured the server does not start",
    )
    tls_certfile: Path | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_keyfile: Path | None = Field(None, description="PEM key of tls_certfile")
    read_only: bool = Field(
        False, description="score without updating entity state (default: update it once)"
    )
    answer_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="how long a repeated event_id gets its first answer"
    )
    timeout: float = Field(
        2.0, gt=0, description="seconds a request waits for Redis or Kafka before a 503"
    )
    max_events: int = Field(100, ge=1, description="events one request may carry")

    def keys(self) -> frozenset[str]:
        """The configured API keys.

        >>> ServeSettings(api_keys=" k1, k2,,").keys() == {"k1", "k2"}
        True
        """
        raw = self.api_keys.get_secret_value() if self.api_keys is not None else ""
        return frozenset(k.strip() for k in raw.split(",") if k.strip())


class WorkerSettings(BaseModel):
    """The Faust worker process."""

    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    data_dir: Path = Path(".precog/worker")
    loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="event loop of the worker (uvloop: less per-event overhead)"
    )
    stream_buffer: int = Field(
        16_384, ge=1, description="events an agent may have waiting in its stream buffer"
    )
    gc_gen0_threshold: int = Field(
        50_000, ge=700, description="allocations between young-generation GC passes"
    )
    fetch_max_wait_ms: int = Field(
        200, ge=0, le=60_000, description="longest a Faust stream's Kafka fetch waits on the"
        " broker for data (Faust's own is 1500: a drained topic then holds back the others)"
    )
    batch_fetch_min_bytes: int = Field(
        32_768, ge=1, le=10_000_000, description="bytes a fetch of the batch transport's hot"
        " topics (score, index) waits for on the broker, up to batch_fetch_max_wait_ms: fewer,"
        " fuller fetches (docs/scoring.md)"
    )
    batch_fetch_max_wait_ms: int = Field(
        10, ge=0, le=60_000, description="longest a fetch of the batch transport's hot topics"
        " waits on the broker for batch_fetch_min_bytes"
    )
    session_timeout: float = Field(
        10.0, ge=6, le=300, description="seconds without a heartbeat after which Kafka "
        "gives a dead worker's partitions to the others (Faust's own is 60)"
    )
    watch_seconds: float = Field(
        2.0, gt=0, le=60, description="how often the Kafka watchdog asks the broker about "
        "the worker's group (services/watchdog.py)"
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="seconds a graceful stop waits for the score and index "
        "agents' batches in flight to finish and commit before it abandons them (redelivered)"
    )
    stall_seconds: float = Field(
        60.0, ge=10, description="seconds the broker may answer while the worker's "
        "consumer is out of its group or a held partition does not move, before the "
        "worker stops so that a restart redelivers (services/watchdog.py)"
    )


class MonitorSettings(BaseModel):
    """Windows and thresholds of the online monitor (docs/monitoring.md)."""

    tick_seconds: float = Field(5.0, gt=0, description="how often metrics/alerts are published")
    metrics_last_n: int = Field(1000, ge=1, description="labels in the rolling-count window")
    metrics_last_window: str = Field("1h", description="event-time rolling window")
    psi_window: int = Field(1000, ge=10, description="events per PSI window")
    psi_threshold: float = Field(0.2, gt=0)
    adwin_delta: float = Field(0.002, gt=0, lt=1)
    lag_threshold: int | None = Field(None, ge=0, description="consumer lag that alerts")
    join_max_entries: int = Field(2_000_000, ge=1000, description="join state cap per partition")


class LifecycleSettings(BaseModel):
    """The promotion controller (services/lifecycle.py, docs/lifecycle.md)."""

    tick_seconds: float | None = Field(
        None, gt=0, description="seconds between the worker's lifecycle ticks (None: four"
        " per promotion interval, 10 s to 15 min)"
    )
    retrain_check_seconds: float = Field(
        300.0, ge=1, description="seconds between two checks of the retraining triggers by"
        " the worker's retrain agent (services/agents/retrain.py)"
    )
    fault_pause_after_record: float = Field(
        0.0, ge=0, description="FAULT TESTS ONLY (tests/faults/test_lifecycle_faults.py):"
        " seconds a made decision waits after it is recorded and before it is applied, so a"
        " test can kill -9 the process there; 0 (the default): no pause"
    )


class KibanaSettings(BaseModel):
    """Kibana, for importing the saved objects (Kibana does not run on the local stack)."""

    url: str = Field("http://127.0.0.1:5601", description="Kibana base URL")
    space: str | None = Field(None, description="Kibana space id (default space if unset)")
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(None, description="encoded API key (id:key base64)")
    ca_certs: Path | None = None
    verify_certs: bool = True
    timeout: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    """Everything precog is configured with. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="PRECOG_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    namespace: str = Field("prod", description="prefix of topics, indices, Redis keys, groups")
    spec: Path = Field(Path("pipelines/specs/transactions.yaml"), description="pipeline spec")
    registry_dir: Path = Field(Path(".precog/registry"), description="model artifact store")
    code_version: str | None = Field(None, description="overrides the detected code version")
    schema_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="more directories of .avsc schemas (a new domain's), after the packaged ones;"
        " PRECOG_SCHEMA_DIRS separates them with ':'",
    )
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    stack: StackSettings = StackSettings()
    score: ScoreSettings = ScoreSettings()
    lightgbm: LightGBMSettings = LightGBMSettings()
    indexer: IndexSettings = IndexSettings()
    worker: WorkerSettings = WorkerSettings()
    serve: ServeSettings = ServeSettings()
    kibana: KibanaSettings = KibanaSettings()
    monitor: MonitorSettings = MonitorSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()

    @field_validator("schema_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v: object) -> object:
        if isinstance(v, str):
            return [Path(d) for d in v.split(os.pathsep) if d]
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace_is_safe(cls, v: str) -> str:
        problem = namespace_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _clients_follow_the_stack_ports(self) -> Settings:
        """Kafka, Redis and Elasticsearch addresses not given explicitly are the local stack's.

        They are filled in as defaults, not marked as set, so :meth:`stack_overridden` still
        tells ``PRECOG_KAFKA_BOOTSTRAP`` (external Kafka) from a default that follows
        ``PRECOG_STACK_KAFKA_PORT``. With the default ports nothing changes.
        """
        given = self.stack_overridden()
        local = {"kafka": ("bootstrap", self.stack.kafka_bootstrap),
                 "redis": ("url", self.stack.redis_url),
                 "elasticsearch": ("url", self.stack.elasticsearch_url),
                 "schema_registry": ("url", self.stack.schema_registry_url)}
        for section, (name, value) in local.items():
            client = getattr(self, section)
            if given[section.replace("_", "-")] or getattr(client, name) == value:
                continue
            followed = type(client).model_construct(
                _fields_set=set(client.model_fields_set), **{**dict(client), name: value}
            )
            # still inside validation, nobody holds this object yet: frozen does not apply
            self.__dict__[section] = followed
        return self

    def topic(self, name: str) -> str:
        """Namespaced topic name, e.g. ``prod.predictions``."""
        return f"{self.namespace}.{name}"

    def index(self, name: str) -> str:
        """Namespaced Elasticsearch index name, e.g. ``prod-predictions``."""
        return f"{self.namespace}-{name}"

    def redis_key(self, *parts: str) -> str:
        """Namespaced Redis key, e.g. ``prod:state:card-1``."""
        return ":".join((self.namespace, *parts))

    @property
    def wire_format(self) -> Literal["single-object", "confluent"]:
        """This namespace's wire format (``PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES``)."""
        return self.schema_registry.wire_format(self.namespace)

    def group(self, name: str) -> str:
        """Namespaced consumer group id."""
        return f"precog-{self.namespace}-{name}"

    def stack_overridden(self) -> dict[str, bool]:
        """Which services were given explicitly (``PRECOG_*`` set), so the stack starts none."""
        given = self.model_fields_set
        return {
            "kafka": "kafka" in given and "bootstrap" in self.kafka.model_fields_set,
            "redis": "redis" in given and "url" in self.redis.model_fields_set,
            "elasticsearch": "elasticsearch" in given
            and "url" in self.elasticsearch.model_fields_set,
            "schema-registry": "schema_registry" in given
            and "url" in self.schema_registry.model_fields_set,
        }


def namespace_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a namespace, or None.

    >>> namespace_problem("parallel"), namespace_problem("Bad")
    (None, "must be lowercase letters, digits, '-' or '_'")
    """
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        return None
    return "must be lowercase letters, digits, '-' or '_'"


_SECRET = re.compile(r"password|api_key|secret|token", re.IGNORECASE)


def _section_of(title: str) -> str | None:
    """The :class:`Settings` field whose section model is named ``title`` (None: not one).

    >>> _section_of("ServeSettings"), _section_of("ModelMetadata")
    ('serve', None)
    """
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel) \
                and section.__name__ == title:
            return name
    return None


def validation_message(exc: ValidationError, options: Mapping[str, str] | None = None) -> str:
    """One line naming what was wrong: the command-line option when the field's value came
    from one (``options``: field -> option name), else the ``PRECOG_*`` variable; the value
    too, unless it is a secret. Only errors of :class:`Settings` (or one of its sections)
    name a variable; any other model is named with the field.

    >>> try:
    ...     Settings(namespace="Bad")
    ... except ValidationError as exc:
    ...     print(validation_message(exc, {"namespace": "--namespace"}))
    ...     print(validation_message(exc))
    bad --namespace 'Bad': must be lowercase letters, digits, '-' or '_'
    invalid setting PRECOG_NAMESPACE='Bad': must be lowercase letters, digits, '-' or '_'
    >>> try:
    ...     Settings(kafka={"partitions": 0})
    ... except ValidationError as exc:
    ...     print(validation_message(exc))
    invalid setting PRECOG_KAFKA_PARTITIONS=0: Input should be greater than or equal to 1
    >>> try:
    ...     ServeSettings(port=-1)
    ... except ValidationError as exc:
    ...     print(validation_message(exc))
    ...     print(validation_message(exc, {"port": "--port"}))
    invalid setting PRECOG_SERVE_PORT=-1: Input should be greater than or equal to 1
    bad --port -1: Input should be greater than or equal to 1
    >>> try:
    ...     KafkaSettings.model_validate_json('{broken')
    ... except ValidationError as exc:
    ...     print(validation_message(exc))
    invalid setting PRECOG_KAFKA_*: Invalid JSON: key must be a string at line 1 column 2
    """
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    msg = str(first["msg"]).removeprefix("Value error, ")
    value: Any = first.get("input")
    shown = "" if isinstance(value, dict) or _SECRET.search(loc[-1] if loc else "") \
        else f" {value!r}"
    if loc and options and loc[0] in options:
        return f"bad {options[loc[0]]}{shown}: {msg}"
    section = _section_of(exc.title)
    if exc.title != Settings.__name__ and section is None:  # not a setting: no variable
        return f"invalid {exc.title}{' ' + '.'.join(loc) if loc else ''}: {msg}"
    if section is not None:
        loc = [section, *loc]
    if not loc:  # the settings as a whole, e.g. not JSON
        return f"invalid settings: {msg}"
    name = "PRECOG_" + "_".join(p.upper() for p in loc)
    field = Settings.model_fields.get(loc[0]) if len(loc) == 1 else None
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name += "_*"  # a check across a section's fields (e.g. the stack's ports)
        shown = ""
    return f"invalid setting {name}{'=' + shown.strip() if shown else ''}: {msg}"


def settings_with(**options: tuple[str, Any]) -> Settings:
    """Settings from the environment, with the command-line options given (field ->
    (option name, value); None values are not given) taking precedence; an invalid value
    raises :class:`ConfigError` naming the option, or the ``PRECOG_*`` variable, it came
    from.

    >>> settings_with(namespace=("--namespace", "t1")).namespace
    't1'
    >>> settings_with(namespace=("--namespace", "T1"))
    Traceback (most recent call last):
    precog.errors.ConfigError: bad --namespace 'T1': must be lowercase letters, digits, '-' or '_'
    """
    given = {name: value for name, (_, value) in options.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        names = {name: option for name, (option, _) in options.items() if name in given}
        raise ConfigError(validation_message(exc, names)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
