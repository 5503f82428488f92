"""The Kafka transport of precog's Faust apps: Faust's aiokafka driver with a shorter fetch wait.

Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change
it. aiokafka keeps one fetch request per broker in flight, for the partitions that have
nothing buffered. When a worker reads several topics (events, predictions, outcomes) and
some of them are drained, that request waits up to the full 1.5 s on the broker for data
that is not coming, and the partitions that do have data wait behind it: in a backlog the
index agent got its predictions in stalls of 0.3-0.5 s (docs/benchmarks.md, round 3).
This transport is Faust's own, except that the worker consumer's fetch wait is
``WorkerSettings.fetch_max_wait_ms``, and that its producer is idempotent (a retry after
a lost acknowledgement does not append the records twice). It is registered under the URL scheme
:data:`SCHEME`, which :func:`precog.services.runtime.create_app` uses for the brokers.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "precog-kafka"

#: aiokafka's default, used when the app does not say
DEFAULT_FETCH_MAX_WAIT_MS = 500


class App(faust.App):
    """A Faust app that carries the consumer's fetch wait for :class:`Transport`."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher;
        # tests/unit/test_transport.py fails if a new aiokafka stops doing so
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS
        )
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Any:
        # idempotent: a batch the broker appended but whose acknowledgement was lost (the
        # broker killed mid-request) is retried with the same sequence numbers, and the
        # broker drops the copy (docs/reliability.md: 0-220 duplicates per broker kill -9
        # without it). Faust turns it on only for exactly-once transactions.
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport: the worker consumer's fetch wait from the app, and an
    idempotent producer."""

    Consumer = _Consumer
    Producer = _Producer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
