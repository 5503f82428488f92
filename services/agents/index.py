"""The index agent: ``{ns}.predictions`` -> Elasticsearch ``{ns}-predictions``, one doc per model.

Bulk ``create`` with deterministic ``_id``: a redelivered prediction gets 409 (it is
already there, with whatever the join and the monitor added) and counts as acknowledged.
The batch's offsets are acknowledged only after Elasticsearch acknowledged every document:
429 and unavailable are retried with exponential backoff for as long as it takes; a
document Elasticsearch rejects for good (e.g. a mapping error) goes to the DLQ with the
reason. The bulk body is written with orjson and the response filtered to the statuses:
JSON on both sides was most of this agent's time in the profile (docs/benchmarks.md).

Up to ``inflight_batches`` batches are written at once: while Elasticsearch indexes one,
the agent decodes and builds the next. The agent reads through the batch transport
(services/batch_transport.py), which commits a batch's offsets only after its documents
were acknowledged (or dead-lettered) and every earlier batch's were, in any completion
order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout
from precog.services.batch_transport import BatchSource
from precog.services.dlq import Failed, send_dead_letters
from precog.services.runtime import Runtime, now_ms

from precog.avro import Codec
from precog.errors import EventError
from precog.prediction_reader import PredictionReader
from precog.scoring import EventContext, prediction_document_sources

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
    existing: int = 0  #: of the acknowledged, those Elasticsearch held already (409)
    retry: list[BulkDoc] = field(default_factory=list)
    rejected: list[tuple[BulkDoc, str]] = field(default_factory=list)


def build_docs(
    rt: Runtime, events: Sequence[Any]
) -> tuple[list[BulkDoc], list[tuple[Any, Exception]]]:
    """The bulk documents of a batch of prediction events, and the undecodable events."""
    reader = _reader(rt.codec("prediction"))
    index = rt.settings.index("predictions")
    indexed_time = now_ms()
    amount_feature = rt.spec.business.amount_feature
    action = b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":'
    docs: list[BulkDoc] = []
    bad: list[tuple[Any, Exception]] = []
    for event in events:
        try:
            prediction = reader.decode(event.message.value)
        except EventError as exc:
            bad.append((event, exc))
            continue
        # the fields shared by the event's documents are serialized once (not per model)
        for doc_id, source in prediction_document_sources(prediction, indexed_time,
                                                          amount_feature):
            docs.append(BulkDoc(doc_id, action + orjson.dumps(doc_id) + b"}}", source, event))
    return docs, bad


@lru_cache(maxsize=4)
def _reader(codec: Codec) -> PredictionReader:
    return PredictionReader(codec)


def classify(docs: Sequence[BulkDoc], response: dict[str, Any]) -> BulkOutcome:
    """Sort a bulk response's items (in request order) into acknowledged, retry, rejected.

    409 on ``create`` means the document already exists (a redelivery, or a prediction id
    indexed before): acknowledged, and counted as ``existing``.

    >>> docs = [BulkDoc(str(i), b"", b"") for i in range(4)]
    >>> out = classify(docs, {"errors": True, "items": [
    ...     {"create": {"status": 201}}, {"create": {"status": 409}},
    ...     {"create": {"status": 429}},
    ...     {"create": {"status": 400, "error": {"type": "document_parsing_exception",
    ...                                          "reason": "bad"}}}]})
    >>> out.acknowledged, out.existing, [d.doc_id for d in out.retry]
    (2, 1, ['2'])
    >>> [(d.doc_id, r) for d, r in out.rejected]
    [('3', 'document_parsing_exception: bad')]
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
            out.existing += status == 409
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
            existing = 0
            for outcome in await asyncio.gather(*(_send(rt, chunk) for chunk in chunks)):
                retry += outcome.retry
                rejected += outcome.rejected
                existing += outcome.existing
            if existing:
                rt.metrics.documents_existing.labels(rt.settings.index("predictions")).inc(
                    existing)
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
    await send_dead_letters(rt, rt.producer(), [_failed(event, exc) for event, exc in failed])
    done = len(docs) - len(rejected)
    rt.metrics.documents_indexed.labels(rt.settings.index("predictions")).inc(done)
    return done


def _failed(event: Any, exc: Exception) -> Failed:
    msg = event.message
    origin = EventContext(msg.topic, msg.partition, msg.offset)
    return Failed(origin, "index", exc, msg.key, msg.value, msg.timestamp)


def register(rt: Runtime) -> None:
    """Read ``{ns}.predictions`` through a :class:`BatchSource` (group ``{ns}-index``).

    Up to ``PRECOG_INDEXER_INFLIGHT_BATCHES`` batches are written at once: while
    Elasticsearch indexes one, the next is decoded and built. The batch transport commits
    their offsets in consumption order, each after its documents (and dead letters) were
    acknowledged.
    """
    cfg = rt.settings.indexer

    async def handle(events: list[Any]) -> None:
        started = time.perf_counter()
        await index_events(rt, events)
        rt.metrics.batch_latency.labels("index").observe(time.perf_counter() - started)
        rt.metrics.batch_size.labels("index").observe(len(events))

    source = BatchSource(rt, "index", [rt.settings.topic("predictions")],
                         rt.settings.group("index"), cfg.batch_size, cfg.batch_timeout, handle,
                         inflight=cfg.inflight_batches)
    rt.batch_sources.append(source)

    @rt.app.task
    async def start_index() -> None:
        source.start()

    rt.on_stop.append(source.stop)
