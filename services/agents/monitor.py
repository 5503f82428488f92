"""The monitor agent: online metrics, drift, outliers and pipeline health of a namespace.

Consumes ``{ns}.labeled`` (metrics, concept drift), ``{ns}.predictions`` (coverage,
prediction and data drift, outliers), the events topic (volume, quality checks),
``{ns}.manifests`` and ``{ns}.dlq``; all the logic is :class:`precog.monitor.Monitor`.
A timer publishes every ``PRECOG_MONITOR_TICK_SECONDS`` (5 s): metrics to ``{ns}.metrics`` and ES
``{ns}-metrics``, alerts to ``{ns}.alerts`` and ES ``{ns}-alerts``, pipeline-health
documents to ES ``{ns}-pipeline-health``, and the outlier flags of the prediction
documents (partial updates; a document not indexed yet is retried).

The training references come from the model registry (metadata ``reference``); a model
without one is compared with its own first window.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from elasticsearch import ApiError, ConnectionTimeout
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch.helpers import async_streaming_bulk
from precog.services.agents.index import RETRYABLE_STATUS, update_documents
from precog.services.reliability import AppProducer, Producer, for_each_event
from precog.services.runtime import Runtime, now_ms

from precog.errors import EventError, PrecogError
from precog.monitor import Monitor, MonitorConfig, Reference
from precog.monitor.health import health_doc_id
from precog.monitor.metrics import metrics_doc_id
from precog.monitor.quality import source_of_topic
from precog.spec import parse_duration

log = logging.getLogger("precog.monitor")

#: flushes an outlier update is retried while its prediction document does not exist yet
MAX_UPDATE_ATTEMPTS = 60
#: monitor documents kept while Elasticsearch is down (about an hour of ticks)
MAX_PENDING_DOCS = 100_000


def monitor_config(rt: Runtime) -> MonitorConfig:
    """Windows and thresholds of the namespace, from the pipeline spec."""
    window = parse_duration(rt.spec.volume.window)
    m = rt.settings.monitor
    return MonitorConfig(
        namespace=rt.settings.namespace,
        volume_window_ms=window,
        min_ratio=rt.spec.volume.min_ratio,
        volume_grace_ms=window,
        metrics_last_n=m.metrics_last_n,
        metrics_last_ms=parse_duration(m.metrics_last_window),
        adwin_delta=m.adwin_delta,
        psi_window=m.psi_window,
        psi_threshold=m.psi_threshold,
        lag_threshold=m.lag_threshold,
    )


def registry_references(rt: Runtime) -> Any:
    """``(model_id, version) -> Reference | None`` from the model registry."""

    @lru_cache(maxsize=64)
    def lookup(model_id: str, version: int) -> Reference | None:
        try:
            from precog.registry import ModelRegistry

            meta = ModelRegistry(rt.settings.registry_dir).get(model_id, version)
        except (PrecogError, OSError) as exc:
            log.warning("no registry metadata for %s v%s: %s", model_id, version, exc)
            return None
        if meta.reference is None:
            return None
        return Reference.from_training(meta.reference)

    return lookup


class MonitorAgent:
    """Decode, call :class:`Monitor`, publish (metrics and alerts through ``producer``)."""

    def __init__(self, rt: Runtime, producer: Producer, monitor: Monitor | None = None) -> None:
        self.rt = rt
        self.producer = producer
        self.monitor = monitor or Monitor(monitor_config(rt), registry_references(rt))
        self.source = rt.spec.name
        self.outlier_updates: dict[str, tuple[dict[str, Any], int]] = {}
        self.pending_docs: list[dict[str, Any]] = []
        self.event_codec = rt.codec(rt.spec.event.schema_name)

    # -- inputs --------------------------------------------------------------------
    def on_labeled(self, value: bytes) -> None:
        self.monitor.on_labeled(self.rt.codec("labeled").decode(value))

    def on_prediction(self, value: bytes) -> None:
        pred = self.rt.codec("prediction").decode(value)
        res = self.monitor.on_prediction(pred)
        if res is None:
            return
        doc = {"outlier": res.outlier, "outlier_score": res.score}
        for m in [pred["leader"], *pred.get("challengers", [])]:
            doc_id = f"{pred['prediction_id']}:{m['model_id']}:{m['version']}"
            self.outlier_updates[doc_id] = (doc, 0)

    def on_event(self, value: bytes | None, timestamp_ms: int) -> None:
        from precog.validation import check_event

        try:
            record = self.event_codec.decode(value)
        except EventError:
            self.monitor.on_event(self.source, timestamp_ms, ["decode"])
            return
        time_field = self.rt.spec.event.time_field
        failures = check_event(self.rt.spec, record, now_ms())
        t = record.get(time_field)
        if not isinstance(t, int) or any(f.field == time_field for f in failures):
            # an out-of-bounds event time (-2**63, epoch 0, far future) must not open a
            # volume window Elasticsearch refuses: count the record at its Kafka timestamp
            t = timestamp_ms
        self.monitor.on_event(self.source, t, failures)

    def on_dead_letter(self, value: bytes, timestamp_ms: int | None = None) -> None:
        """One dead letter, counted at its record timestamp (= the failed record's)."""
        rec = self.rt.codec("dead_letter").decode(value)
        source = source_of_topic(rec["source_topic"], self.rt.settings.namespace)
        if source == self.rt.spec.event.topic.removeprefix("events."):
            source = self.source
        t = timestamp_ms if timestamp_ms is not None else int(rec["failed_time"])
        self.monitor.on_dead_letter(source, t, rec["error_class"])

    def on_manifest(self, value: bytes) -> None:
        rec = self.rt.codec("manifest").decode(value)
        if rec["source"] == self.rt.spec.event.topic.removeprefix("events."):
            rec = {**rec, "source": self.source}
        self.monitor.on_manifest(rec)

    def observe_lag(self) -> None:
        """Consumer lag per subscribed topic of this worker (high water - committed)."""
        consumer = getattr(self.rt.app, "consumer", None)
        if consumer is None:
            return
        lags: dict[str, int] = {}
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                committed = consumer._committed_offset.get(tp)  # noqa: SLF001 - no public API
                if high is None:
                    continue
                lags[tp.topic] = lags.get(tp.topic, 0) + max(0, high - (committed or 0))
        except Exception as exc:  # lag is best effort, never stops the monitor
            log.debug("lag unavailable: %s", exc)
            return
        for topic, lag in lags.items():
            self.monitor.on_lag(f"{self.rt.app.conf.id}:{topic}", lag)

    # -- outputs -------------------------------------------------------------------
    async def tick(self) -> None:
        """Publish what the monitor computed; waits while Kafka is down, defers while ES is."""
        self.observe_lag()
        now = now_ms()
        out = self.monitor.tick(now, horizon=now)
        for alert in out.alerts:
            log.warning("ALERT %s: %s", alert["kind"], alert["message"])
        s = self.rt.settings
        metrics_codec, alert_codec = self.rt.codec("metrics"), self.rt.codec("alert")
        await self.producer.produce(s.topic("metrics"), [
            (r["model_id"].encode(), metrics_codec.encode(r), None, None) for r in out.metrics
        ], "monitor: publish metrics")
        await self.producer.produce(s.topic("alerts"), [
            (a["alert_id"].encode(), alert_codec.encode(a), None, None) for a in out.alerts
        ], "monitor: publish alerts")
        actions = [{"_op_type": "index", "_index": s.index("metrics"),
                    "_id": metrics_doc_id(r), "_source": r} for r in out.metrics]
        actions += [{"_op_type": "index", "_index": s.index("alerts"), "_id": a["alert_id"],
                     "_source": a} for a in out.alerts]
        actions += [{"_op_type": "index", "_index": s.index("pipeline-health"),
                     "_id": health_doc_id(d), "_source": d} for d in out.health]
        self.pending_docs.extend(actions)
        if len(self.pending_docs) > MAX_PENDING_DOCS:
            dropped = len(self.pending_docs) - MAX_PENDING_DOCS
            log.error("monitor documents: dropping the %d oldest of those waiting for "
                      "Elasticsearch (more than %d)", dropped, MAX_PENDING_DOCS)
            del self.pending_docs[:dropped]
        await self._bulk()
        await self._flush_outliers()

    async def _bulk(self) -> None:
        """Write the waiting documents; when Elasticsearch is down, keep them for the next tick.

        Ids are deterministic and the op is ``index``, so writing a document twice is safe.
        """
        if not self.pending_docs:
            return
        actions = self.pending_docs
        try:
            async for ok, item in async_streaming_bulk(self.rt.es, actions,
                                                       raise_on_error=False, max_retries=5):
                if not ok:
                    log.warning("monitor document rejected: %s", item)
        except (ESConnectionError, ConnectionTimeout) as exc:
            if self.rt.health.waiting("elasticsearch", f"elasticsearch unavailable at "
                                      f"{self.rt.settings.elasticsearch.url}: {exc}"):
                log.warning("monitor documents deferred (Elasticsearch: %s)", exc)
            return
        except ApiError as exc:
            if getattr(exc.meta, "status", None) not in RETRYABLE_STATUS:
                raise
            log.warning("monitor documents deferred (Elasticsearch: %s)", exc)
            return
        self.pending_docs = []
        if self.rt.health.recovered("elasticsearch"):
            log.warning("Elasticsearch is available again; monitor documents written")

    async def _flush_outliers(self) -> None:
        if not self.outlier_updates:
            return
        batch, self.outlier_updates = self.outlier_updates, {}
        again = await update_documents(self.rt, self.rt.settings.index("predictions"), batch,
                                       max_attempts=MAX_UPDATE_ATTEMPTS,
                                       what="outlier update")
        for doc_id, entry in again.items():
            self.outlier_updates.setdefault(doc_id, entry)


def _guard(fn: Any, value: Any, *args: Any) -> None:
    try:
        fn(value, *args)
    except EventError as exc:
        log.warning("monitor skipped an undecodable record: %s", exc)


def _monitor_agent(rt: Runtime, topic: str, name: str, handle: Any) -> None:
    async def run(stream: Any) -> None:
        await for_each_event(rt, stream, name, handle)

    run.__name__ = run.__qualname__ = name.replace("-", "_")  # Faust names agents by function
    rt.app.agent(rt.topic(topic), name=name)(run)


def register(rt: Runtime) -> None:
    """Declare the monitor's agents and its publishing timer."""
    ns = rt.settings.namespace
    agent = MonitorAgent(rt, AppProducer(rt))
    rt.monitor = agent

    async def on_labeled(event: Any) -> None:
        _guard(agent.on_labeled, event.message.value)

    async def on_prediction(event: Any) -> None:
        _guard(agent.on_prediction, event.message.value)

    async def on_event(event: Any) -> None:
        msg = event.message
        agent.on_event(msg.value, int(msg.timestamp * 1000) if msg.timestamp else now_ms())

    async def on_manifest(event: Any) -> None:
        _guard(agent.on_manifest, event.message.value)

    async def on_dead_letter(event: Any) -> None:
        msg = event.message
        _guard(agent.on_dead_letter, msg.value, int(msg.timestamp * 1000) if msg.timestamp
               else None)

    for topic, name, handle in (
        ("labeled", "labeled", on_labeled),
        ("predictions", "predictions", on_prediction),
        (rt.spec.event.topic, "events", on_event),
        ("manifests", "manifests", on_manifest),
        ("dlq", "dlq", on_dead_letter),
    ):
        _monitor_agent(rt, topic, f"{ns}-monitor-{name}", handle)

    @rt.app.timer(rt.settings.monitor.tick_seconds, name=f"{ns}-monitor-tick")
    async def tick() -> None:
        await agent.tick()

    rt.on_stop.append(agent.tick)
