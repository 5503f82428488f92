"""The index agent: ``{ns}.predictions`` -> Elasticsearch ``{ns}-predictions``, one doc per model.

Bulk writes with deterministic ``_id`` (redelivery overwrites). The batch's offsets are
acknowledged only after Elasticsearch acknowledged every document: 429 and unavailable
are retried with exponential backoff for as long as it takes; a document Elasticsearch
rejects for good (e.g. a mapping error) goes to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from elasticsearch import ApiError, ConnectionError, ConnectionTimeout
from elasticsearch.helpers import async_streaming_bulk

from precog.errors import EventError
from precog.scoring import EventContext, prediction_documents
from services.dlq import send_dead_letter
from services.runtime import Runtime, now_ms

log = logging.getLogger("precog.index")

RETRYABLE_STATUS = {429, 502, 503, 504}


class IndexRejected(EventError):
    """Elasticsearch refused a document for a reason retrying cannot fix."""


def build_actions(
    rt: Runtime, events: Sequence[Any]
) -> tuple[list[dict[str, Any]], dict[str, tuple[Any, int]], list[tuple[Any, Exception]]]:
    """Bulk actions of a batch, the event behind each ``_id``, and undecodable events."""
    codec = rt.codec("prediction")
    index = rt.settings.index("predictions")
    indexed_time = now_ms()
    actions: list[dict[str, Any]] = []
    owners: dict[str, tuple[Any, int]] = {}
    bad: list[tuple[Any, Exception]] = []
    for n, event in enumerate(events):
        try:
            prediction = codec.decode(event.message.value)
        except EventError as exc:
            bad.append((event, exc))
            continue
        for doc_id, doc in prediction_documents(prediction, indexed_time):
            # an upsert, so a redelivered prediction keeps what the join and the monitor
            # added to its document (outcome_label, outlier, ...)
            actions.append({
                "_op_type": "update", "_index": index, "_id": doc_id,
                "doc": doc, "doc_as_upsert": True,
            })
            owners[doc_id] = (event, n)
    return actions, owners, bad


async def bulk_until_acknowledged(rt: Runtime, actions: list[dict[str, Any]]) -> list[dict]:
    """Write ``actions``; retry retryable failures with backoff until all are acknowledged.

    Returns the items Elasticsearch rejected for good (status 4xx other than 429).
    """
    cfg = rt.settings.indexer
    pending = actions
    rejected: list[dict] = []
    backoff = cfg.initial_backoff
    while pending:
        retry: list[dict[str, Any]] = []
        try:
            by_id = {a["_id"]: a for a in pending}
            async for ok, item in async_streaming_bulk(
                rt.es,
                pending,
                chunk_size=cfg.batch_size,
                max_retries=cfg.max_retries,
                initial_backoff=cfg.initial_backoff,
                raise_on_error=False,
                raise_on_exception=True,
            ):
                if ok:
                    continue
                info = item.get("update", item)
                status = int(info.get("status", 0))
                if status in RETRYABLE_STATUS:
                    retry.append(by_id[info["_id"]])
                else:
                    rejected.append(info)
        except (ConnectionError, ConnectionTimeout, ApiError) as exc:
            status = getattr(getattr(exc, "meta", None), "status", None)
            if isinstance(exc, ApiError) and status not in RETRYABLE_STATUS:
                raise
            rt.metrics.index_retries.labels(type(exc).__name__).inc()
            log.warning("Elasticsearch unavailable (%s); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            continue  # resend the whole batch: ids are deterministic
        if retry:
            rt.metrics.index_retries.labels("429").inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        pending = retry
    return rejected


async def index_events(rt: Runtime, events: Sequence[Any]) -> int:
    """Index one batch of predictions; returns the number of documents acknowledged."""
    actions, owners, bad = build_actions(rt, events)
    futures = []
    for event, exc in bad:
        msg = event.message
        origin = EventContext(msg.topic, msg.partition, msg.offset)
        futures.append(await send_dead_letter(
            rt, origin, "index", exc, msg.key, msg.value, msg.timestamp
        ))
    rejected = await bulk_until_acknowledged(rt, actions) if actions else []
    for info in rejected:
        event, _ = owners[info["_id"]]
        msg = event.message
        origin = EventContext(msg.topic, msg.partition, msg.offset)
        reason = IndexRejected(f"{info.get('_id')}: {info.get('error')}")
        futures.append(await send_dead_letter(
            rt, origin, "index", reason, msg.key, msg.value, msg.timestamp
        ))
    if futures:
        await asyncio.gather(*futures)
    done = len(actions) - len(rejected)
    rt.metrics.documents_indexed.labels(rt.settings.index("predictions")).inc(done)
    return done


def register(rt: Runtime) -> None:
    """Declare the index agent on ``{ns}.predictions``."""
    cfg = rt.settings.indexer

    @rt.app.agent(rt.topic("predictions"), name=f"{rt.settings.namespace}-index")
    async def index(stream: Any) -> None:
        async for events in stream.take_events(cfg.batch_size, within=cfg.batch_timeout):
            started = time.perf_counter()
            await index_events(rt, events)
            rt.metrics.batch_latency.labels("index").observe(time.perf_counter() - started)
            rt.metrics.batch_size.labels("index").observe(len(events))
