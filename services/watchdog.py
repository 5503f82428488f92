"""The Kafka watchdog: ``/health`` tells the truth about the broker, and a stuck consumer stops.

The worker's Kafka clients (aiokafka under Faust) retry on their own while the broker is
down: a produce waits up to Faust's 1,200 s request timeout without failing, so nothing an
agent awaits says that Kafka is gone. And in 2 of 15 broker kill -9 runs (docs/
reliability.md) aiokafka's group coordinator lookup never resumed after the broker came
back: the worker left the group and consumed nothing more, with every offset held and no
error anywhere. So the worker watches Kafka from outside its own consumer and producer, as
an operator would, with clients of its own every ``WorkerSettings.watch_seconds``
(:class:`Probe`):

- the broker does not answer: ``/health`` says 503 with ``kafka`` (and its address) in
  ``waiting_for`` until it answers again; the agents keep their offsets held meanwhile;
- the broker answers, but one of the partitions Faust assigned to this worker has records
  after its committed offset and that offset has not moved for
  ``WorkerSettings.stall_seconds``: the worker is stuck in its own client. It stops (exit
  1) through :func:`precog.services.reliability.stop_worker` without committing anything more;
  its supervisor (systemd, Kubernetes, the fault test) starts it again and the held
  offsets are redelivered. Not while a dependency is waited for, the models are missing
  or the worker stops: offsets held on purpose are not a stall.

:class:`StallClock` is the decision, pure and tested; :class:`Probe` asks the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from precog.services.reliability import stop_worker

log = logging.getLogger("precog.watchdog")

#: a partition: (topic, partition)
TP = tuple[str, int]


@dataclass(frozen=True)
class GroupView:
    """One look at the broker: unreachable (``error``), or where the worker's partitions are.

    ``behind`` holds the worker's assigned partitions that have records after their
    committed offset: ``(topic, partition) -> (committed, end)``; committed is -1 when the
    group never committed that partition.
    """

    error: str | None = None
    behind: dict[TP, tuple[int, int]] = field(default_factory=dict)


class Stalled(RuntimeError):
    """The broker answers but the worker's consumer has not moved for the stall limit."""


@dataclass
class StallClock:
    """Decides from successive :class:`GroupView` s whether the consumer is stuck.

    >>> clock = StallClock(stall_seconds=60)
    >>> clock.observe(GroupView(behind={("e", 0): (5, 9)}), 10.0, excused=False)
    >>> clock.observe(GroupView(behind={("e", 0): (7, 9)}), 50.0, excused=False)  # moved
    >>> clock.observe(GroupView(behind={("e", 0): (7, 9)}), 100.0, excused=False)
    >>> clock.observe(GroupView(behind={("e", 0): (7, 9)}), 111.0, excused=False)
    'e[0] stayed at committed offset 7 of 9 for 61 s'
    >>> clock.observe(GroupView(behind={("e", 0): (7, 9)}), 120.0, excused=True)  # held on purpose
    >>> clock.observe(GroupView(behind={("e", 0): (7, 9)}), 175.0, excused=False)
    >>> clock.observe(GroupView(error="refused"), 200.0, excused=False)  # an outage: not a stall
    >>> clock.observe(GroupView(), 300.0, excused=False)  # caught up
    >>> clock.held
    {}
    """

    stall_seconds: float
    #: partitions behind: (committed offset, when it was first seen at that offset)
    held: dict[TP, tuple[int, float]] = field(default_factory=dict)

    def observe(self, view: GroupView, now: float, excused: bool) -> str | None:
        """The stall, described, once a partition behind has not moved for ``stall_seconds``.

        An outage (``view.error``) or offsets held on purpose (``excused``: a dependency is
        waited for, the models are missing, the worker stops) start the count again.
        """
        if view.error is not None or excused:
            self.held.clear()
            return None
        self.held = {tp: held for tp, held in self.held.items() if tp in view.behind}
        for tp, (committed, end) in view.behind.items():
            seen = self.held.get(tp)
            if seen is None or seen[0] != committed:
                self.held[tp] = (committed, now)
            elif now - seen[1] > self.stall_seconds:
                return (f"{tp[0]}[{tp[1]}] stayed at committed offset {committed} of {end} "
                        f"for {now - seen[1]:.0f} s")
        return None


class Probe:
    """Asks the broker for the worker's committed and end offsets, every call bounded.

    aiokafka clients of its own, in the worker's loop (not confluent-kafka's admin client:
    librdkafka aborts the whole process with ``rd_kafka_enq_once_del_source_return:
    Assertion `eonce->refcnt > 0' failed`` when a group-coordinator request loses its
    connection, which is what a broker outage does; confluentinc/librdkafka#4605, seen here
    on the first broker kill -9). After any failure the clients are closed and built
    again, so a client stuck in its own retries cannot make the watchdog lie.
    """

    def __init__(self, settings: Any, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._admin: Any = None
        self._offsets: Any = None

    def _auth(self) -> dict[str, Any]:
        import ssl

        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
        from precog.services.runtime import broker_credentials

        creds = broker_credentials(self.settings)
        if isinstance(creds, ssl.SSLContext):
            return dict(credentials_to_aiokafka_auth(None, creds))
        return dict(credentials_to_aiokafka_auth(creds))

    async def _clients(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        if self._admin is None:
            common = {"bootstrap_servers": self.settings.kafka.bootstrap,
                      "request_timeout_ms": int(self.timeout * 1000), **self._auth()}
            self._admin = AIOKafkaAdminClient(client_id="precog-watchdog", **common)
            self._offsets = AIOKafkaConsumer(client_id="precog-watchdog", group_id=None,
                                             enable_auto_commit=False, **common)
            await self._admin.start()
            await self._offsets.start()
        return self._admin, self._offsets

    async def close(self) -> None:
        admin, offsets, self._admin, self._offsets = self._admin, self._offsets, None, None
        for client in (admin, offsets):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close() if client is admin
                                           else client.stop(), self.timeout)

    async def look(self, group: str, assigned: list[TP]) -> GroupView:
        """Committed and end offsets of ``assigned`` (the worker's own partitions)."""
        try:
            return await asyncio.wait_for(self._look(group, assigned), self.timeout * 2)
        except Exception as exc:  # any failure of the probe is "the broker did not answer"
            await self.close()
            return GroupView(error=f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def _look(self, group: str, assigned: list[TP]) -> GroupView:
        from aiokafka import TopicPartition

        admin, offsets = await self._clients()
        await admin.describe_cluster()  # the broker answers, whatever the assignment
        if not assigned:
            return GroupView()
        tps = [TopicPartition(t, p) for t, p in assigned]
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await offsets.end_offsets(tps)
        behind: dict[TP, tuple[int, int]] = {}
        for tp in tps:
            meta = committed.get(tp)
            at = meta.offset if meta is not None and meta.offset >= 0 else -1
            end = int(ends[tp])
            if end > max(at, 0):
                behind[(tp.topic, tp.partition)] = (at, end)
        return GroupView(behind=behind)


def register(rt: Any) -> None:
    """Run the watchdog as a task of the worker's app."""
    settings = rt.settings
    every = settings.worker.watch_seconds
    address = settings.kafka.bootstrap

    @rt.app.task
    async def kafka_watchdog() -> None:
        probe = Probe(settings, timeout=max(1.0, every))
        clocks: dict[str, StallClock] = {}
        prefix = settings.topic("")
        try:
            while True:
                await asyncio.sleep(every)
                # the partitions Faust assigned to this worker, of the namespace's topics
                # (not table changelogs, which the group never commits), and those of the
                # worker's own batch consumers (services/batch_transport.py)
                groups = [(settings.group("worker"), sorted(
                    (tp.topic, tp.partition) for tp in rt.app.consumer.assignment()
                    if tp.topic.startswith(prefix)))]
                groups += [(src.group, src.assignment()) for src in rt.batch_sources]
                views = [await probe.look(group, assigned) for group, assigned in groups]
                error = next((v.error for v in views if v.error is not None), None)
                if error is not None:
                    if rt.health.waiting("kafka", f"kafka is not reachable at {address}: "
                                                  f"{error}"):
                        log.warning("kafka is not reachable at %s (%s); offsets are held "
                                    "until it answers", address, error)
                elif rt.health.recovered("kafka"):
                    log.info("kafka answers again at %s", address)
                excused = (bool(rt.health.dependencies) or rt.health.fatal is not None
                           or rt.stopping or (rt.models is None and "score" in rt.agents))
                for (group, _), view in zip(groups, views, strict=True):
                    clock = clocks.setdefault(group, StallClock(settings.worker.stall_seconds))
                    stall = clock.observe(view, time.monotonic(), excused)
                    if stall is not None:
                        rt.health.conditions["kafka-consumer"] = f"{group} stuck: {stall}"
                        await stop_worker(rt, "kafka watchdog", Stalled(
                            f"{group}: {stall} while the broker at {address} answered; "
                            "stopping so that a restart redelivers the held offsets"))
        finally:
            await probe.close()
