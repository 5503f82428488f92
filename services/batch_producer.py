"""The worker's confluent-kafka producer for the batch agents (services/batch_transport.py).

Idempotent, ``acks=all``, the murmur2 partitioner; one wait per batch for its delivery
reports, and only the records Kafka did not acknowledge are sent again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError
from precog.services.batch_transport import is_transient
from precog.services.reliability import RECORD_OVERHEAD, OutRecord, until_available

from precog.errors import ServiceUnavailable
from precog.io import kafka

#: librdkafka's linger (ms, a float) for the worker: the records of one batch are produced
#: in one loop
LINGER_MS = 0.5


class DeliveryFailed(Exception):
    """Kafka refused records for a reason waiting does not fix."""


class BatchProducer:
    """:class:`~precog.services.reliability.Producer` over a confluent-kafka producer.

    Idempotent, ``acks=all``, murmur2 (``KafkaSettings.producer_config``). One thread
    serves the delivery reports; :meth:`produce` waits for the reports of its whole batch
    with one future, and sends again only the records Kafka did not acknowledge.
    """

    def __init__(self, rt: Any, max_bytes: int, linger_ms: float = LINGER_MS) -> None:
        self.rt = rt
        self.address = rt.settings.kafka.bootstrap
        self._max_bytes = max_bytes
        self._producer = kafka.producer(rt.settings, **{
            "enable.idempotence": True,
            "acks": "all",
            # a batch is handed over in one go; waiting longer for more adds to every
            # event's latency (docs/scoring.md "Batch transport")
            "linger.ms": linger_ms,
            "message.max.bytes": max_bytes,
            "client.id": f"precog-score-{rt.worker_name}",
        })
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="precog-producer", daemon=True)
        self._thread.start()

    @property
    def record_limit(self) -> int:
        return self._max_bytes - RECORD_OVERHEAD

    def _serve(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def _send(self, topic: str, records: Sequence[OutRecord],
              report: Callable[[int, KafkaError | None], None] | None, start: int = 0,
              block: bool = True) -> int:
        """Hand ``records[start:]`` to librdkafka; returns how many of them it took (all,
        unless ``block`` is false and its local queue filled up)."""
        p = self._producer
        for i in range(start, len(records)):
            key, value, headers, timestamp = records[i]
            kwargs: dict[str, Any] = {"key": key, "value": value}
            if headers:
                kwargs["headers"] = headers
            if timestamp is not None:
                kwargs["timestamp"] = int(timestamp * 1000)
            if report is not None:
                kwargs["on_delivery"] = partial(_delivered, report, i)
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:  # the local queue is full: wait for deliveries
                    if not block:
                        return i - start
                    time.sleep(0.005)
        return len(records) - start

    async def produce(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        pending = list(records)
        loop = asyncio.get_running_loop()

        async def attempt() -> None:
            nonlocal pending
            if not pending:
                return
            done: asyncio.Future[None] = loop.create_future()
            failed: list[tuple[int, KafkaError]] = []
            left = [len(pending)]

            def report(i: int, err: KafkaError | None) -> None:  # in the delivery thread
                if err is not None:
                    failed.append((i, err))
                left[0] -= 1
                if left[0] == 0:
                    loop.call_soon_threadsafe(_finish, done)

            # in the event loop (produce only enqueues): no thread hop per batch; only when
            # librdkafka's queue is full does the rest wait for room in a thread
            sent = self._send(topic, pending, report, block=False)
            if sent < len(pending):
                await loop.run_in_executor(None, self._send, topic, pending, report, sent)
            await done
            if failed:
                errors = [e for _, e in failed]
                pending = [pending[i] for i, _ in sorted(failed, key=lambda f: f[0])]
                permanent = [e for e in errors if not is_transient(e)]
                if permanent:
                    raise DeliveryFailed(f"{what}: kafka refused {len(permanent)} records: "
                                         f"{permanent[0]}")
                raise ServiceUnavailable("kafka", self.address,
                                         f"{len(errors)} records not acknowledged: {errors[0]}")

        await until_available(self.rt.health, what, attempt)

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        self._send(topic, records, None)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._producer.flush, 30.0)
        self._running = False
        self._thread.join(timeout=5)


def _delivered(report: Callable[[int, KafkaError | None], None], i: int,
               err: KafkaError | None, _msg: Any) -> None:
    report(i, err)


def _finish(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
