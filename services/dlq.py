"""Sending dead letters: the one place where per-event errors are turned into DLQ records."""

from __future__ import annotations

import logging
from typing import Any

from precog.scoring import EventContext, dead_letter
from services.runtime import Runtime, now_ms

log = logging.getLogger("precog.dlq")


async def send_dead_letter(
    rt: Runtime,
    origin: EventContext,
    stage: str,
    error: BaseException,
    key: bytes | None,
    payload: bytes | None,
    timestamp: float | None = None,
) -> Any:
    """Send one record to ``{ns}.dlq`` with its reason; returns the delivery future.

    ``timestamp`` (seconds) is the failed record's own timestamp, so the dead letter counts
    in the same event-time window as the record it replaces.
    """
    record, headers = dead_letter(
        origin=origin, stage=stage, error=error, key=key, payload=payload, failed_time=now_ms()
    )
    rt.metrics.dead_letters.labels(stage, record["error_class"]).inc()
    log.info(
        "dead letter %s[%d]@%d (%s): %s",
        origin.topic, origin.partition, origin.offset, record["error_class"], error,
    )
    return await rt.topic("dlq").send(
        key=key, value=rt.codec("dead_letter").encode(record), headers=headers,
        timestamp=timestamp,
    )
