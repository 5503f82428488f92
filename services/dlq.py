"""Sending dead letters: the one place where per-record errors are turned into DLQ records."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from precog.services.reliability import OutRecord, Producer
from precog.services.runtime import Runtime, now_ms

from precog.scoring import EventContext, dead_letter

log = logging.getLogger("precog.dlq")


@dataclass(frozen=True)
class Failed:
    """One record that cannot be processed, and why."""

    origin: EventContext
    stage: str
    error: BaseException
    key: bytes | None
    payload: bytes | None
    #: the failed record's own timestamp (seconds), so the dead letter counts in the same
    #: event-time window as the record it replaces
    timestamp: float | None = None


def _out_record(rt: Runtime, failed: Failed) -> OutRecord:
    record, headers = dead_letter(
        origin=failed.origin, stage=failed.stage, error=failed.error, key=failed.key,
        payload=failed.payload, failed_time=now_ms(),
    )
    rt.metrics.dead_letters.labels(failed.stage, record["error_class"]).inc()
    o = failed.origin
    log.info("dead letter %s[%d]@%d (%s): %s",
             o.topic, o.partition, o.offset, record["error_class"], record["error_message"])
    return record["key"], rt.codec("dead_letter").encode(record), headers, failed.timestamp


async def send_dead_letters(rt: Runtime, producer: Producer, failed: Sequence[Failed]) -> None:
    """Send every record of ``failed`` to ``{ns}.dlq`` with its reason; wait for the acks.

    A dead letter is always small enough to send (:func:`precog.scoring.dead_letter`
    truncates what is too large); while Kafka is unavailable this waits, offsets held.
    """
    if failed:
        records = [_out_record(rt, f) for f in failed]
        await producer.produce(rt.settings.topic("dlq"), records, "dead letters")


async def send_dead_letter(
    rt: Runtime,
    producer: Producer,
    origin: EventContext,
    stage: str,
    error: BaseException,
    key: bytes | None,
    payload: bytes | None,
    timestamp: float | None = None,
) -> None:
    """:func:`send_dead_letters` for one record."""
    await send_dead_letters(rt, producer, [Failed(origin, stage, error, key, payload, timestamp)])
