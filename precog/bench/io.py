"""Benchmark I/O: worker processes, pre-produced events, topic timestamps, RSS, paced load.

Everything here talks to the local stack only (the addresses in :class:`Settings`), and
every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from precog.errors import PrecogError
from precog.io import kafka
from precog.settings import Settings
from precog.workers import REPO, free_port, stop_group, worker_env

#: (key, value) of one pre-encoded event
Encoded = tuple[bytes, bytes]


class BenchError(PrecogError):
    """A benchmark step did not complete (a process died, a deadline passed)."""


def now_ms() -> int:
    return int(time.time() * 1000)


# -- processes --------------------------------------------------------------------------
#: the worker's environment for a Settings (shared with the demo and the e2e tests)
process_env = worker_env


class Proc:
    """A worker-like subprocess (``args`` after ``python -m``) with its log in ``log_dir``."""

    def __init__(self, settings: Settings, args: Sequence[str], log_dir: Path, name: str) -> None:
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{settings.namespace}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=process_env(settings, self.port, log_dir / "worker-data"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.log_path.name} exited {self.proc.returncode}:\n"
                             f"{self.log_tail()}")

    def health(self) -> dict[str, Any] | None:
        """The worker's /health body when it answers 200, else None."""
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except (OSError, urllib.error.HTTPError, ValueError):
            return None

    def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            body = self.health()
            if body is not None:
                return body
            time.sleep(0.3)
        raise BenchError(f"{self.log_path.name} not healthy after {timeout}s:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """Resident set size (psutil; 0 when the process is gone)."""
        import psutil

        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        stop_group(self.proc, sig, timeout)
        self._log.close()


# -- Kafka ------------------------------------------------------------------------------
def producer(settings: Settings, **extra: Any) -> Producer:
    return kafka.producer(settings, **{"acks": "all", "linger.ms": 5,
                                       "queue.buffering.max.messages": 1_000_000, **extra})


def produce_all(settings: Settings, topic: str, events: Sequence[Encoded],
                timeout: float = 300.0) -> None:
    """Produce ``events`` as fast as Kafka takes them; every one acknowledged or raise."""
    p = producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for key, value in events:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(timeout) or failed:
        raise BenchError(f"pre-producing to {topic}: {len(failed)} failed {failed[:1]}")


def _consumer(settings: Settings, **extra: Any) -> Consumer:
    return kafka.consumer(settings, f"bench-{now_ms()}", **{
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "enable.partition.eof": False, **extra})


def partitions(consumer: Consumer, topic: str) -> list[int]:
    md = consumer.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BenchError(f"topic {topic} does not exist")
    return sorted(md.topics[topic].partitions)


def end_offsets(settings: Settings, topic: str, consumer: Consumer | None = None) -> int:
    """Records in ``topic`` (sum of high watermarks; our topics are never truncated)."""
    c = consumer or _consumer(settings)
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in partitions(c, topic))
    finally:
        if consumer is None:
            c.close()


def wait_records(settings: Settings, topic: str, expected: int, timeout: float,
                 procs: Sequence[Proc] = ()) -> None:
    """Block until ``topic`` holds ``expected`` records (or raise on deadline / dead process)."""
    c = _consumer(settings)
    try:
        deadline = time.monotonic() + timeout
        while end_offsets(settings, topic, c) < expected:
            for p in procs:
                p.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{topic}: fewer than {expected} records after {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        c.close()


def record_timestamps(settings: Settings, topic: str, expected: int,
                      timeout: float = 120.0) -> list[int]:
    """Record timestamps (ms) of the first ``expected`` records of ``topic``, all partitions."""
    c = _consumer(settings)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in partitions(c, topic)])
        out: list[int] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for msg in c.consume(5000, 0.5):
                if msg.error() is None:
                    out.append(msg.timestamp()[1])
        if len(out) < expected:
            raise BenchError(f"{topic}: read {len(out)} of {expected} records")
        return out
    finally:
        c.close()


def forward_record(p: Producer, sink: str, msg: Any) -> None:
    """Produce a consumed record's key and value to ``sink``; when librdkafka's queue is full,
    serve deliveries and try again."""
    while True:
        try:
            p.produce(sink, msg.value(), msg.key())
            return
        except BufferError:
            p.poll(0.01)


def raw_passthrough(settings: Settings, source: str, sink: str, n: int,
                    timeout: float = 300.0) -> None:
    """The raw ceiling: a confluent-kafka consume -> produce loop of ``n`` records."""
    c = _consumer(settings, **{"group.id": settings.group("bench-raw")})
    p = producer(settings)
    c.subscribe([source])
    done = 0
    deadline = time.monotonic() + timeout
    try:
        while done < n:
            if time.monotonic() > deadline:
                raise BenchError(f"raw passthrough moved {done} of {n} in {timeout:.0f}s")
            for msg in c.consume(500, 0.1):
                if msg.error() is not None:
                    continue
                forward_record(p, sink, msg)
                done += 1
            p.poll(0)
        if p.flush(60):
            raise BenchError("raw passthrough: records not acknowledged")
    finally:
        c.close()


# -- latency probe ----------------------------------------------------------------------
#: the paced producer sends what is due at most this often (s), instead of one sleep (a
#: syscall and a wake-up) per event
_PACE_TICK = 0.0005
#: the paced producer's ``linger.ms``: librdkafka's default (and the Java client's since
#: Kafka 4.0), as an upstream producer would have it. Its wait is inside every measured
#: latency; at 1 ms the probe's own produce requests made Kafka the second-largest CPU
#: user of the 2-core machine (0.45 against 0.32 cores at 10,000 events/s, docs/benchmarks.md)
PROBE_LINGER_MS = 5.0


@dataclass
class LatencyProbe:
    """Offer events at a fixed rate and time each until its prediction is received.

    Each event is produced with an explicit record timestamp (the produce time); the
    prediction's key is the event id. The predictions are received in a process of their
    own (:func:`_receive_until`), and the producer sends what is due every
    ``_PACE_TICK`` s: as a thread beside a producer that slept once per event, the receiver
    read p50 3.0 s at 16,500 events/s while the worker used 0.65 cores with 0.6 idle; with
    both changes the same worker read 0.13 s (docs/benchmarks.md, round 9).
    """

    settings: Settings
    source: str
    sink: str
    latencies_ms: list[float] = field(default_factory=list)
    _sent: dict[bytes, int] = field(default_factory=dict)

    def run(self, events: Sequence[tuple[bytes, bytes, bytes]], rate: float,
            warmup_s: float, drain_s: float = 5.0) -> dict[str, Any]:
        """Offer ``events`` (key, value, event id) at ``rate``/s; latencies after warm-up."""
        import multiprocessing as mp

        self.latencies_ms, self._sent = [], {}
        ctx = mp.get_context("spawn")  # no fork of this process's librdkafka threads
        stop, ready = ctx.Event(), ctx.Event()
        received = ctx.Value("q", 0)
        parent, child = ctx.Pipe(duplex=False)
        receiver = ctx.Process(target=_receive_until, name="latency-receiver", daemon=True,
                               args=(self.settings, self.sink, child, stop, ready, received))
        receiver.start()
        child.close()
        try:
            if not ready.wait(60):
                raise BenchError(f"the latency receiver did not start on {self.sink}")
            p = producer(self.settings, **{"linger.ms": PROBE_LINGER_MS})
            warm_until = time.time() + warmup_s
            started = time.perf_counter()
            sent, total = 0, len(events)
            while sent < total:
                due = min(total, int((time.perf_counter() - started) * rate) + 1)
                while sent < due:
                    key, value, eid = events[sent]
                    ts = now_ms()
                    if ts / 1000 >= warm_until:
                        self._sent[eid] = ts
                    p.produce(self.source, value, key, timestamp=ts)
                    sent += 1
                p.poll(0)
                if sent < total:
                    wait = started + sent / rate - time.perf_counter()
                    time.sleep(max(wait, _PACE_TICK))
            offered = total / (time.perf_counter() - started)
            sent_until = time.time()
            p.flush(30)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline and received.value < total:
                time.sleep(0.05)
            stop.set()
            arrivals: list[tuple[bytes, float]] = parent.recv() if parent.poll(30) else []
        finally:
            stop.set()
            receiver.join(10)
            if receiver.is_alive():
                receiver.kill()
            parent.close()
        for key, at in arrivals:
            was = self._sent.get(key)
            if was is not None:
                self.latencies_ms.append(at - was)
        return {"offered_rate": offered, "measured": len(self._sent),
                "received": len(self.latencies_ms), "window": (warm_until, sent_until)}


def _receive_until(settings: Settings, sink: str, conn: Any, stop: Any, ready: Any,
                   received: Any) -> None:
    """The latency receiver's process: (key, receive time in ms) of every record of ``sink``
    from its end, sent back through ``conn`` once ``stop`` is set."""
    c = _consumer(settings, **{"fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
    arrivals: list[tuple[bytes, float]] = []
    try:
        c.assign([TopicPartition(sink, p, OFFSET_END) for p in partitions(c, sink)])
        settle = time.monotonic() + 1.0  # the assignment at the end of the topic settles
        while time.monotonic() < settle:
            c.poll(0.05)
        ready.set()
        while not stop.is_set():
            # poll() returns as soon as one record is there; consume(n, timeout) would wait
            # for n records or the timeout and add its wait to every latency
            first = c.poll(0.05)
            at = time.time() * 1000
            msgs = ([first, *c.consume(1000, 0)] if first is not None else [])
            for msg in msgs:
                key = msg.key()
                if msg.error() is None and key is not None:  # else an EOF or other error
                    arrivals.append((key, at))
            if msgs:
                received.value = len(arrivals)
    finally:
        c.close()
        conn.send(arrivals)
        conn.close()
