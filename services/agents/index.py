"""The index agent: ``{ns}.predictions`` -> Elasticsearch ``{ns}-predictions``, one doc per model.

Bulk ``create`` with deterministic ``_id``: a redelivered prediction gets 409 (it is
already there, with whatever the join and the monitor added) and counts as acknowledged.
The batch's offsets are acknowledged only after Elasticsearch acknowledged every document:
429 and unavailable are retried with exponential backoff for as long as it takes; a
document Elasticsearch rejects for good (e.g. a mapping error) goes to the DLQ with the
reason. The bulk body is written with orjson and the response filtered to the statuses:
JSON on both sides was most of this agent's time in the profile (docs/benchmarks.md).

Up to ``inflight_batches`` batches are written at once: while Elasticsearch indexes one,
the agent decodes and builds the next. Each event holds a reference on its Kafka message
until its own batch is acknowledged, so Faust commits an offset only after Elasticsearch
acknowledged it (or its dead letter was written), in any completion order: Faust commits
up to the first offset not yet acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout
from precog.services.dlq import Failed, send_dead_letters
from precog.services.reliability import AppProducer, consume_in_batches, release
from precog.services.runtime import Runtime, now_ms

from precog.errors import EventError
from precog.scoring import EventContext, prediction_documents

log = logging.getLogger("precog.index")

RETRYABLE_STATUS = {429, 502, 503, 504}
#: the bulk response keeps only what the agent reads (items stay in request order)
FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"


class IndexRejected(EventError):
    """Elasticsearch refused a document for a reason retrying cannot fix."""


@dataclass
class BulkDoc:
    """One document of a bulk request: its two NDJSON lines and the event it came from."""

    doc_id: str
    action: bytes
    source: bytes
    owner: Any = None


@dataclass
class BulkOutcome:
    """What Elasticsearch said about each document of one request."""

    acknowledged: int = 0
    retry: list[BulkDoc] = field(default_factory=list)
    rejected: list[tuple[BulkDoc, str]] = field(default_factory=list)


def build_docs(
    rt: Runtime, events: Sequence[Any]
) -> tuple[list[BulkDoc], list[tuple[Any, Exception]]]:
    """The bulk documents of a batch of prediction events, and the undecodable events."""
    codec = rt.codec("prediction")
    index = rt.settings.index("predictions")
    indexed_time = now_ms()
    amount_feature = rt.spec.business.amount_feature
    docs: list[BulkDoc] = []
    bad: list[tuple[Any, Exception]] = []
    for event in events:
        try:
            prediction = codec.decode(event.message.value)
        except EventError as exc:
            bad.append((event, exc))
            continue
        for doc_id, doc in prediction_documents(prediction, indexed_time, amount_feature):
            docs.append(BulkDoc(
                doc_id,
                orjson.dumps({"create": {"_index": index, "_id": doc_id}}),
                orjson.dumps(doc),
                event,
            ))
    return docs, bad


def classify(docs: Sequence[BulkDoc], response: dict[str, Any]) -> BulkOutcome:
    """Sort a bulk response's items (in request order) into acknowledged, retry, rejected.

    409 on ``create`` means the document already exists: a redelivery, acknowledged.

    >>> docs = [BulkDoc(str(i), b"", b"") for i in range(4)]
    >>> out = classify(docs, {"errors": True, "items": [
    ...     {"create": {"status": 201}}, {"create": {"status": 409}},
    ...     {"create": {"status": 429}},
    ...     {"create": {"status": 400, "error": {"type": "document_parsing_exception",
    ...                                          "reason": "bad"}}}]})
    >>> out.acknowledged, [d.doc_id for d in out.retry], [(d.doc_id, r) for d, r in out.rejected]
    (2, ['2'], [('3', 'document_parsing_exception: bad')])
    >>> classify(docs, {"errors": False}).acknowledged
    4
    """
    out = BulkOutcome()
    if not response.get("errors"):
        out.acknowledged = len(docs)
        return out
    items = response.get("items", [])
    if len(items) != len(docs):
        raise RuntimeError(f"bulk response has {len(items)} items for {len(docs)} documents")
    for doc, item in zip(docs, items, strict=True):
        info = next(iter(item.values()))
        status = int(info.get("status", 0))
        if status < 300 or status == 409:
            out.acknowledged += 1
        elif status in RETRYABLE_STATUS:
            out.retry.append(doc)
        else:
            error = info.get("error") or {}
            out.rejected.append((doc, f"{error.get('type')}: {error.get('reason')}"))
    return out


async def _send(rt: Runtime, chunk: list[BulkDoc]) -> BulkOutcome:
    lines = [line for d in chunk for line in (d.action, d.source)]
    response = await rt.es.bulk(operations=lines, filter_path=FILTER_PATH)
    return classify(chunk, dict(response.body))


async def update_documents(
    rt: Runtime, index: str, batch: dict[str, tuple[dict[str, Any], int]], *,
    max_attempts: int, what: str,
) -> dict[str, tuple[dict[str, Any], int]]:
    """Partial updates (``{"doc": ...}``) of existing documents; returns what to try again.

    ``batch`` maps a document id to (fields, attempts so far). The join (outcomes) and the
    monitor (outlier scores) update prediction documents that the index agent may not have
    written yet: a missing document (404) or an overloaded Elasticsearch (429, 502-504)
    comes back with one more attempt until ``max_attempts``; other refusals are logged and
    dropped. When Elasticsearch cannot be reached the whole batch comes back unchanged.
    """
    docs = [BulkDoc(doc_id, orjson.dumps({"update": {"_index": index, "_id": doc_id}}),
                    orjson.dumps({"doc": doc}), attempts)
            for doc_id, (doc, attempts) in batch.items()]
    size = rt.settings.indexer.request_docs
    try:
        outcomes = await asyncio.gather(*(_send(rt, docs[at:at + size])
                                          for at in range(0, len(docs), size)))
    except (ConnectionError, ConnectionTimeout, ApiError) as exc:
        log.warning("%s deferred (Elasticsearch: %s)", what, exc)
        return dict(batch)
    again: dict[str, tuple[dict[str, Any], int]] = {}
    for outcome in outcomes:
        later = list(outcome.retry)  # 429, 502-504
        for d, reason in outcome.rejected:
            if reason.startswith("document_missing_exception"):  # 404: not indexed yet
                later.append(d)
            else:
                log.warning("%s of %s refused: %s", what, d.doc_id, reason)
        for d in later:
            if d.owner + 1 < max_attempts:
                again[d.doc_id] = (batch[d.doc_id][0], d.owner + 1)
            else:
                log.warning("%s of %s given up after %d attempts", what, d.doc_id, max_attempts)
    return again


async def bulk_until_acknowledged(
    rt: Runtime, docs: list[BulkDoc]
) -> list[tuple[BulkDoc, str]]:
    """Write ``docs``; retry retryable failures with backoff until all are acknowledged.

    Returns the documents Elasticsearch rejected for good (4xx other than 409 and 429),
    each with the reason.
    """
    cfg = rt.settings.indexer
    rejected: list[tuple[BulkDoc, str]] = []
    backoff = cfg.initial_backoff
    pending = docs
    while pending:
        retry: list[BulkDoc] = []
        try:
            # the chunks go out together: Elasticsearch indexes them on its write threads
            # while this process is free to decode the next batch
            chunks = [pending[at:at + cfg.request_docs]
                      for at in range(0, len(pending), cfg.request_docs)]
            for outcome in await asyncio.gather(*(_send(rt, chunk) for chunk in chunks)):
                retry += outcome.retry
                rejected += outcome.rejected
        except (ConnectionError, ConnectionTimeout, ApiError) as exc:
            status = getattr(getattr(exc, "meta", None), "status", None)
            if isinstance(exc, ApiError) and status not in RETRYABLE_STATUS:
                raise
            rt.metrics.index_retries.labels(type(exc).__name__).inc()
            if rt.health.waiting("elasticsearch", f"elasticsearch unavailable at "
                                 f"{rt.settings.elasticsearch.url}: {exc}"):
                log.warning("Elasticsearch unavailable (%s); offsets held, retrying", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            continue  # resend all that is pending: ids are deterministic, 409 is success
        if retry:
            rt.metrics.index_retries.labels("429").inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        pending = retry
    if rt.health.recovered("elasticsearch"):
        log.warning("Elasticsearch is available again; indexing resumes")
    return rejected


async def index_events(
    rt: Runtime, events: Sequence[Any], built: tuple[list[BulkDoc], list[tuple[Any, Exception]]]
    | None = None,
) -> int:
    """Index one batch of predictions; returns the number of documents acknowledged.

    ``built`` is the batch's :func:`build_docs` result when the caller made it already.
    """
    docs, bad = built if built is not None else build_docs(rt, events)
    failed: list[tuple[Any, Exception]] = list(bad)
    rejected = await bulk_until_acknowledged(rt, docs) if docs else []
    failed += [(d.owner, IndexRejected(f"{d.doc_id}: {reason}")) for d, reason in rejected]
    await send_dead_letters(rt, AppProducer(rt), [_failed(event, exc) for event, exc in failed])
    done = len(docs) - len(rejected)
    rt.metrics.documents_indexed.labels(rt.settings.index("predictions")).inc(done)
    return done


def _failed(event: Any, exc: Exception) -> Failed:
    msg = event.message
    origin = EventContext(msg.topic, msg.partition, msg.offset)
    return Failed(origin, "index", exc, msg.key, msg.value, msg.timestamp)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("index batch failed (its events stay uncommitted and are redelivered): %r",
                  task.exception())


class BatchWindow:
    """At most ``limit`` index batches in flight; their offsets are released in order.

    The events come held (:func:`~precog.services.reliability.consume_in_batches`), so the
    stream's own acknowledgement does not commit them. Each batch's task writes
    its documents (and dead letters), then waits for the batch before it and releases its
    events: offsets become committable in the order they were consumed, whichever write
    finished first. A failed batch re-raises in the agent at the next :meth:`submit` or
    :meth:`drain`; neither it nor any later batch is released (all are redelivered).
    """

    def __init__(self, rt: Runtime, stream: Any, limit: int) -> None:
        self.rt, self.stream, self.limit = rt, stream, limit
        self.tasks: deque[asyncio.Task[int]] = deque()
        self._last: asyncio.Task[int] | None = None

    async def _run(self, events: Sequence[Any], built: Any, started: float,
                   before: asyncio.Task[int] | None) -> int:
        done = await index_events(self.rt, events, built)
        if before is not None:
            await asyncio.shield(before)  # raises when it failed: this batch stays held too
        await release(self.stream, events)
        self.rt.metrics.batch_latency.labels("index").observe(time.perf_counter() - started)
        self.rt.metrics.batch_size.labels("index").observe(len(events))
        return done

    async def submit(self, events: Sequence[Any]) -> None:
        """Build the batch's documents now and write them in the background."""
        started = time.perf_counter()
        built = build_docs(self.rt, events)  # the events are held by the caller
        before = self._last if self._last is not None and not self._last.done() else None
        if self._last is not None and self._last.done():
            self._last.result()  # raises what it raised
        task = asyncio.ensure_future(self._run(events, built, started, before))
        task.add_done_callback(_log_failure)
        self.tasks.append(task)
        self._last = task
        while self.tasks and (len(self.tasks) >= self.limit or self.tasks[0].done()):
            await self.tasks.popleft()  # raises what the batch raised

    async def drain(self) -> None:
        while self.tasks:
            await self.tasks.popleft()

    def cancel(self) -> None:
        """Stop the batches still in flight; their events were not released (redelivered)."""
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        self._last = None


def register(rt: Runtime) -> None:
    """Declare the index agent on ``{ns}.predictions``."""
    cfg = rt.settings.indexer

    @rt.app.agent(rt.topic("predictions"), name=f"{rt.settings.namespace}-index")
    async def index(stream: Any) -> None:
        window = BatchWindow(rt, stream, cfg.inflight_batches)
        try:
            await consume_in_batches(rt, stream, "index", cfg.batch_size, cfg.batch_timeout,
                                     window.submit)
        finally:
            window.cancel()
