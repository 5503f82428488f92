"""The worker's runtime: the Faust app and what every agent shares (settings, codecs, clients).

Agents are modules in ``services/agents`` exposing ``register(rt: Runtime) -> None``;
``services/worker.py`` lists them in its ``AGENTS`` table.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
from precog.services import transport
from precog.services.reliability import WorkerHealth
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from precog.avro import Codec
from precog.event_reader import EventReader
from precog.schema_registry import namespace_codec
from precog.scoring import ModelSet
from precog.settings import Settings
from precog.spec import PipelineSpec

if TYPE_CHECKING:  # the agents import this module
    from precog.services.agents.join import OutcomeJoin
    from precog.services.agents.monitor import MonitorAgent
    from precog.services.agents.role_watcher import RoleWatcher
    from precog.services.batch_producer import BatchProducer
    from precog.services.batch_transport import BatchSource

log = logging.getLogger("precog.worker")


def now_ms() -> int:
    return int(time.time() * 1000)


class WorkerMetrics:
    """Prometheus metrics of one worker, in their own registry (served on /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("precog_events_in", "Events consumed", ["source"], registry=r)
        self.predictions_out = Counter(
            "precog_predictions_out", "Predictions produced", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "precog_dead_letters", "Records sent to the DLQ", ["stage", "error_class"], registry=r
        )
        self.documents_indexed = Counter(
            "precog_documents_indexed",
            "Documents acknowledged by Elasticsearch (created, or held already: see "
            "precog_documents_existing)", ["index"], registry=r,
        )
        self.documents_existing = Counter(
            "precog_documents_existing",
            "Documents Elasticsearch held already (409 on create): a redelivered prediction,"
            " or a prediction id indexed before (an event id seen again)", ["index"],
            registry=r,
        )
        self.index_retries = Counter(
            "precog_index_retries", "Bulk requests retried", ["reason"], registry=r
        )
        self.batch_latency = Histogram(
            "precog_batch_seconds",
            "Wall time to process one micro-batch",
            ["agent"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_stage = Histogram(
            "precog_batch_stage_seconds",
            "Wall time of one stage of a micro-batch (the score agent: decode, state_read,"
            " featurize, predict_encode, publish, state_write)",
            ["agent", "stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._stage_children: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self.batch_size = Histogram(
            "precog_batch_size", "Events per micro-batch", ["agent"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500), registry=r,
        )
        self.model_loaded = Gauge(
            "precog_model_loaded",
            "1 for each model version currently scoring",
            ["model_id", "version", "role", "artifact_sha256"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "precog_consumer_lag",
            "Records of a partition this worker owns not yet committed by its group "
            "(high watermark - committed offset; the batch transport's groups)",
            ["group", "topic", "partition"], registry=r,
        )
        self.roles_revision = Gauge(
            "precog_roles_revision", "Revision of the model-control record in use", registry=r
        )

    def stages(self, agent: str, stages: tuple[str, ...]) -> StageClock:
        """A clock for one batch of ``agent``: :meth:`StageClock.lap` after each stage."""
        children = self._stage_children.get((agent, stages))
        if children is None:  # the labelled histograms, looked up once per agent
            children = {stage: self.batch_stage.labels(agent, stage) for stage in stages}
            self._stage_children[(agent, stages)] = children
        return StageClock(children)


class StageClock:
    """Wall time per stage of one micro-batch, into ``precog_batch_stage_seconds``.

    ``lap(stage)`` charges the time since the last lap (or since the clock was made) to
    ``stage``; a stage lapped twice in a batch (the score agent featurizes again after
    dropping a record it cannot encode) adds up. :meth:`observe` records every one of
    ``stages`` once (0 for a stage the batch had nothing for), when the batch succeeded: a
    batch that raised is not a sample. So each stage's count is the agent's batch count.

    ``children``: each stage's labelled histogram (:meth:`WorkerMetrics.stages` binds them once
    per agent).

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("s", "s", ["agent", "stage"], registry=CollectorRegistry())
    >>> clock = StageClock({stage: h.labels("score", stage) for stage in ("read", "write")})
    >>> clock.lap("read"); clock.lap("read")
    >>> sorted(clock.spent) == ["read", "write"] and clock.spent["write"] == 0.0
    True
    >>> clock.observe()  # one sample per stage
    >>> {x.labels["stage"]: x.value for x in h.collect()[0].samples if x.name == "s_count"}
    {'read': 1.0, 'write': 1.0}
    """

    __slots__ = ("_children", "_last", "spent")

    def __init__(self, children: Mapping[str, Any]) -> None:
        self._children = children
        self._last = time.perf_counter()
        self.spent: dict[str, float] = dict.fromkeys(children, 0.0)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.spent[stage] += now - self._last
        self._last = now

    def observe(self) -> None:
        children = self._children
        for stage, seconds in self.spent.items():
            children[stage].observe(seconds)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    k = settings.kafka
    if k.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    if k.ssl_certfile:
        ctx.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    return ctx


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured Kafka security protocol (None for PLAINTEXT)."""
    k = settings.kafka
    ctx = _ssl_context(settings)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism or "PLAIN",
            ssl_context=ctx,
        )
    return ctx


def install_event_loop(settings: Settings) -> None:
    """Use the configured event loop (``PRECOG_WORKER_LOOP``) in this process.

    Call before the Faust app and worker exist. uvloop runs Faust's per-message callbacks,
    futures and socket reads with less interpreter work than the stdlib loop.
    """
    if settings.worker.loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")


def tune_gc(settings: Settings) -> None:
    """Cheaper cyclic garbage collection for a long-running, allocation-heavy worker.

    Everything alive now (the app, loaded models, River state) moves to the permanent
    generation, so collections stop walking it; young-generation passes run every
    ``PRECOG_WORKER_GC_GEN0_THRESHOLD`` allocations instead of 700. The per-event records
    are freed by reference counting either way. Called at start and after a model swap.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(settings.worker.gc_gen0_threshold, gen1, gen2)


def make_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """The Faust worker that runs ``app``, logging at ``loglevel``, without the spinner.

    At ``warning`` and above Faust draws a terminal spinner that turns on every log
    message: it sets the root logger to DEBUG, so every debug call in Faust and aiokafka
    (one per produced record) builds a log record that is then dropped. The profile showed
    it as 25 us per prediction. A service has no terminal to spin in.
    """
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker


def run_worker(app: faust.App, settings: Settings, loglevel: str) -> None:
    """Run ``app`` until stopped: the GC tuned for what is loaded now, then the Faust worker.

    The one start-up path of ``precog worker``, the bench baselines and the profiled worker,
    so they compare with the same process tuning. The event loop must be installed
    (:func:`install_event_loop`) before the app is built.
    """
    tune_gc(settings)
    make_worker(app, loglevel).execute_from_commandline()


def create_app(settings: Settings, app_id: str | None = None) -> faust.App:
    """The Faust app of a namespace: its own group id, topics and web port."""
    brokers = [f"{transport.SCHEME}://{h.strip()}" for h in settings.kafka.bootstrap.split(",")]
    data_dir = settings.worker.data_dir / settings.namespace
    data_dir.mkdir(parents=True, exist_ok=True)
    app = transport.App(
        app_id or settings.group("worker"),
        broker=brokers,
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port,
        web_bind=settings.worker.web_host,
        datadir=str(data_dir),
        producer_acks=-1,
        broker_commit_interval=1.0,
        # a worker killed with -9 holds its partitions until Kafka gives up on it: the
        # whole group (survivors too) waits that long in the next rebalance
        broker_session_timeout=settings.worker.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.worker.session_timeout / 3),
        # Faust's default of 4096 makes the consumer hand events to a busy agent one at a
        # time, and a backlog of events holds back every other topic (the index agent's
        # predictions) until it is scored; 16384: precog 5.3k -> 7.0k events/s, with
        # indexing 2.5k -> 3.0k (docs/benchmarks.md)
        stream_buffer_maxsize=settings.worker.stream_buffer,
        stream_wait_empty=False,
    )
    app.fetch_max_wait_ms = settings.worker.fetch_max_wait_ms
    return app


@dataclass
class Runtime:
    """Everything the agents of one worker share."""

    settings: Settings
    spec: PipelineSpec
    app: faust.App
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    health: WorkerHealth = field(default_factory=WorkerHealth)
    models: ModelSet | None = None
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    last_batch_time: float | None = None
    code_version: str = "unknown"
    #: names of the registered agents (services/worker.py ``AGENTS``), in order
    agents: list[str] = field(default_factory=list)
    #: awaited in order when the app stops (close clients, flush, a last tick)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: set when the worker begins to stop: offsets held from then on are not a stall
    stopping: bool = False
    #: the agents' own state, set by their ``register`` (None when the agent is not run):
    #: the role watcher once the app has started it, the join and the monitor
    role_watcher: RoleWatcher | None = None
    join: OutcomeJoin | None = None
    monitor: MonitorAgent | None = None
    #: consumers the worker owns besides Faust's (services/batch_transport.py)
    batch_sources: list[BatchSource] = field(default_factory=list)
    _es: Any = None
    _producer: BatchProducer | None = None
    _topics: dict[str, faust.TopicT] = field(default_factory=dict)
    _codecs: dict[str, Codec] = field(default_factory=dict)
    _event_reader: EventReader | None = None

    def codec(self, schema_name: str) -> Codec:
        """The schema's codec in the namespace's wire format (Confluent: ids looked up once)."""
        found = self._codecs.get(schema_name)
        if found is None:
            found = self._codecs[schema_name] = namespace_codec(self.settings, self.spec,
                                                                schema_name)
        return found

    def event_reader(self) -> EventReader:
        """The events' compiled reader in the namespace's wire format (one per runtime)."""
        if self._event_reader is None:
            self._event_reader = EventReader(self.codec(self.spec.event.schema_name))
        return self._event_reader

    def event_schema_label(self) -> str:
        # from the cached codec: reading the schema files again every batch is hot-path work
        return self.codec(self.spec.event.schema_name).writer.label

    def topic(self, name: str, **kwargs: Any) -> faust.TopicT:
        """The raw-bytes Faust topic ``{ns}.<name>`` (one object per name)."""
        return self.kafka_topic(self.settings.topic(name), **kwargs)

    def kafka_topic(self, name: str, **kwargs: Any) -> faust.TopicT:
        """The raw-bytes Faust topic of a full topic name (one object per name)."""
        if name not in self._topics:
            self._topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                **kwargs,
            )
        return self._topics[name]

    def producer(self) -> BatchProducer:
        """The worker's confluent-kafka producer for the batch agents, created on first use.

        Closed (flushed) by :meth:`close_producer` after every agent has stopped.
        """
        if self._producer is None:
            from precog.services.batch_producer import BatchProducer

            self._producer = BatchProducer(self, int(self.app.conf.producer_max_request_size))
        return self._producer

    async def close_producer(self) -> None:
        if self._producer is not None:
            await self._producer.close()
            self._producer = None

    @property
    def es(self) -> Any:
        """AsyncElasticsearch client, created on first use."""
        if self._es is None:
            from precog.io.elasticsearch import async_elasticsearch_client

            self._es = async_elasticsearch_client(self.settings)
        return self._es
