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


def head_is_acked(acked: list[int], gap_starts: list[int], start: int | None) -> bool:
    """May offsets be committed: is the partition's next offset ``start`` acknowledged?

    ``acked`` are acknowledged offsets not yet committed, ``gap_starts`` the first offsets
    of the ranges Faust knows are missing on the partition (never sent: they count as
    acknowledged), ``start`` the offset after the last commit, or where reading began.

    Faust's own check (``Consumer._new_offset``) lets the first acknowledged offset be
    one past the committed one, and has no check at all while a partition's committed
    offset is unset or 0: both commit over an offset still being processed, which is an
    event lost for good if the worker stops before it is done (one lost of 3,000 in a
    SIGTERM x3 run, issue 12). Here the first acknowledged offset must be ``start``:

    >>> head_is_acked([168, 169], [], 167)    # 167 still in flight: Faust would commit 170
    False
    >>> head_is_acked([167, 168], [], 167)
    True
    >>> head_is_acked([5, 6], [3], 3)         # 3 and 4 were never sent
    True
    >>> head_is_acked([2], [], None)          # nothing known to compare with: Faust decides
    True
    """
    if not acked or start is None:
        return True
    return min([*acked, *gap_starts]) <= start


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer that never commits over an offset not yet acknowledged."""

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        # reading starts again from the committed offsets: forget where it began before
        self._precog_first: dict[Any, int] = {}
        await super().perform_seek()

    def track_message(self, message: Any) -> None:
        # the first offset read of a partition is where its commits must start from when
        # the group has no committed offset for it (Faust keeps None for 0 and unset)
        first = self.__dict__.setdefault("_precog_first", {})
        if message.tp not in first:
            first[message.tp] = message.offset
        super().track_message(message)

    def _new_offset(self, tp: Any) -> Any:
        start = self._committed_offset[tp]
        if start is None:
            start = self.__dict__.get("_precog_first", {}).get(tp)
        gap_starts = [iv.begin for iv in self._gap[tp]] if self._gap.get(tp) else []
        if not head_is_acked(self._acked[tp], gap_starts, start):
            return None
        return super()._new_offset(tp)


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


# by its installed name, not ``__name__``: pytest's doctest collection imports this file a
# second time as ``services.transport``, which must not register a second Transport class
TRANSPORTS.aliases[SCHEME] = "precog.services.transport:Transport"
