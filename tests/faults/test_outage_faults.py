"""Outages of Elasticsearch and of the Kafka broker mid-run, on a second, disposable stack.

Each scenario starts only the service it breaks on a second stack (own home and ports,
docs/stack.md) and points the worker at it; the other services are the main stack's, which
is never touched. Events are produced at a steady rate, the service is stopped mid-run
(Elasticsearch with SIGTERM, the broker with kill -9 by pid) and started again, and every
offset of the events topic is accounted for from Kafka (tests/faults/reconcile.py). The
worker must wait with its offsets held and not restart (the one exception: the Kafka
watchdog stopping a consumer stuck after the outage, which :class:`Supervised` starts
again, as a supervisor would), `/health` 503 naming the dependency while it is down and
200 after. Elasticsearch must end with exactly one document per model (leader +
challenger) for every predicted event.

:func:`report` prints each scenario's summary row and, under ``./scripts/faults``, appends
it to ``PRECOG_FAULTS_REPORT`` for the table in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from elasticsearch.helpers import scan
from precog.services.model_control import publish_roles, read_roles

from precog import stack as local_stack
from precog.avro import Codec
from precog.io.elasticsearch import elasticsearch_client
from precog.namespace import apply_index_templates, ensure_topics
from precog.settings import ElasticsearchSettings, Settings
from precog.workers import WorkerProcess, metric_total, second_stack_settings
from tests.e2e.helpers import wait_for
from tests.faults.reconcile import Reconciliation, read_all, report
from tests.faults.test_worker_faults import _produce_in_background, _settled

#: seconds Elasticsearch stays down (``PRECOG_FAULTS_ES_DOWN_S``; the full run uses 120)
ES_DOWN_S = float(os.environ.get("PRECOG_FAULTS_ES_DOWN_S", "30"))
#: seconds the killed broker stays down (``PRECOG_FAULTS_KAFKA_DOWN_S``; the full run uses 20)
KAFKA_DOWN_S = float(os.environ.get("PRECOG_FAULTS_KAFKA_DOWN_S", "10"))
#: events per second of the producer thread
RATE = 100.0
#: client addresses that would mark a second stack's service as external (docs/stack.md)
_ADDRESS_ENV = ("PRECOG_KAFKA_BOOTSTRAP", "PRECOG_REDIS_URL", "PRECOG_ELASTICSEARCH_URL")


# --------------------------------------------------------------------------- second stacks


def _second_stack(home: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    """Settings of a stack in ``home`` on five free ports; its clients follow those ports."""
    for name in _ADDRESS_ENV:  # set, they would mean "external service": start nothing
        monkeypatch.delenv(name, raising=False)
    return second_stack_settings(home, **extra)


@pytest.fixture
def es2(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Settings]]:
    """(second stack, namespace settings using its Elasticsearch, templates applied)."""
    # as root Elasticsearch runs as precog-es, which cannot enter pytest's 0700 tmp dirs
    home = Path(tempfile.mkdtemp(prefix="precog-faults-es-"))
    home.chmod(0o755)
    second = _second_stack(home, monkeypatch, elasticsearch_heap="512m")
    try:
        started = time.monotonic()
        local_stack.up(second, echo=print, only=("elasticsearch",))
        print(f"second Elasticsearch up in {time.monotonic() - started:.1f} s")
        ns = settings.model_copy(update={
            "elasticsearch": ElasticsearchSettings(url=second.stack.elasticsearch_url)})
        apply_index_templates(ns)
        yield second, ns
    finally:
        local_stack.down(second, echo=print, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def kafka2(settings: Settings, trained: Any, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Settings]]:
    """(second stack, namespace settings using its Kafka): topics and the trained roles there."""
    second = _second_stack(tmp_path / "stack2", monkeypatch, kafka_heap="384m")
    try:
        local_stack.up(second, echo=print, only=("kafka",))
        ns = settings.model_copy(update={
            "kafka": settings.kafka.model_copy(update={"bootstrap": second.stack.kafka_bootstrap})})
        ensure_topics(ns, trained)
        roles = read_roles(settings, trained.name)  # `trained` published them on the main Kafka
        assert roles is not None
        publish_roles(ns, roles)
        yield second, ns
    finally:
        local_stack.down(second, echo=print, timeout=30)


# --------------------------------------------------------------------------- the worker seen


@dataclass(frozen=True)
class Sample:
    """One look at the worker: ``/health`` (0 when it does not answer) and two counters."""

    t: float
    status: int
    waiting_for: dict[str, str]
    predicted: float
    indexed: float


@dataclass
class HealthTrace:
    """``/health`` and ``/metrics`` of one worker, sampled every ``every`` s in a thread."""

    worker: WorkerProcess | Supervised
    every: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def look(self) -> Sample:
        t = time.monotonic()
        try:
            status, body = self.worker.health()
        except OSError:
            return Sample(t, 0, {}, -1.0, -1.0)
        try:
            text = self.worker.metrics()
            predicted = metric_total(text, "precog_predictions_out_total")
            indexed = metric_total(text, "precog_documents_indexed_total")
        except OSError:
            predicted = indexed = -1.0
        return Sample(t, status, dict(body.get("waiting_for") or {}), predicted, indexed)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.look())
            self._stop.wait(self.every)

    def __enter__(self) -> HealthTrace:
        self._thread = threading.Thread(target=self._run, name="health-trace", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in list(self.samples) if start <= s.t < end]

    def first(self, after: float, test: Callable[[Sample], bool],
              timeout: float) -> Sample | None:
        """The first sample after ``after`` that passes ``test``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((s for s in list(self.samples) if s.t >= after and test(s)), None)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def _names(dependency: str) -> Callable[[Sample], bool]:
    return lambda s: s.status == 503 and dependency in s.waiting_for


@dataclass
class Outage:
    """What the worker showed around one outage of ``dependency``; times are monotonic."""

    dependency: str
    fault: float = 0.0  # the signal was sent
    dead: float = 0.0  # the process was gone
    restart: float = 0.0  # start_service was called
    back: float = 0.0  # start_service returned: the stack's own health check passed
    noticed: Sample | None = None  # first 503 naming the dependency, before the restart
    lies: list[Sample] = field(default_factory=list)  # anything else while it was dead
    seen: Counter[tuple[int, tuple[str, ...]]] = field(default_factory=Counter)
    healthy: Sample | None = None  # first 200 after the restart began
    resumed_s: float | None = None  # the counter grew again, seconds after the restart began

    def observe(self, trace: HealthTrace, counter: str, timeout: float = 120.0) -> None:
        """Fill in the health fields from ``trace`` (waits up to ``timeout`` for a 200)."""
        names = _names(self.dependency)
        down = trace.between(self.fault, self.restart)
        self.noticed = next((s for s in down if names(s)), None)
        # while the process is still stopping it may answer: from then on, once it is gone
        held_from = max(self.noticed.t, self.dead) if self.noticed is not None else self.dead
        self.lies = [s for s in down if s.t >= held_from and not names(s)]
        self.seen = Counter((s.status, tuple(sorted(s.waiting_for)))
                            for s in trace.between(self.dead, self.restart))
        self.healthy = trace.first(self.restart, lambda s: s.status == 200, timeout)
        before = [getattr(s, counter) for s in trace.between(0, self.restart)
                  if getattr(s, counter) >= 0]
        base = before[-1] if before else 0.0
        grew = trace.first(self.restart, lambda s: getattr(s, counter) > base, timeout)
        self.resumed_s = None if grew is None else grew.t - self.restart

    def stalled(self, trace: HealthTrace, counter: str) -> float | None:
        """Seconds after the restart began when ``counter`` last grew (None: never after)."""
        values = [(s.t, getattr(s, counter)) for s in list(trace.samples)]
        grew = [t for (t, v), (_, before) in zip(values[1:], values, strict=False)
                if v > before and t >= self.restart]
        return grew[-1] - self.restart if grew else None

    @property
    def noticed_s(self) -> float | None:
        return None if self.noticed is None else self.noticed.t - self.fault

    @property
    def recovery_s(self) -> float | None:
        """Seconds from the service being healthy again until ``/health`` said 200 (>= 0).

        None when ``/health`` never said 503 for it (nothing to recover from) or never 200.
        """
        if self.noticed is None or self.healthy is None:
            return None
        return max(0.0, self.healthy.t - self.back)

    def notes(self, what: str) -> str:
        """The table's notes: when ``/health`` noticed, when ``what`` resumed."""
        noticed = ("503 never (/health stayed 200)" if self.noticed_s is None
                   else f"503 after {self.noticed_s:.1f} s")
        resumed = ("never" if self.resumed_s is None
                   else f"{self.resumed_s:.1f} s after the restart began")
        return f"{noticed}; {what} resumed {resumed}"

    def line(self) -> str:
        def s(v: float | None) -> str:
            return "never" if v is None else f"{v:.1f} s"
        healthy = None if self.healthy is None else max(0.0, self.healthy.t - self.back)
        return (f"503 naming {self.dependency} after {s(self.noticed_s)}, 200 "
                f"{s(healthy)} after it was back (restart took "
                f"{self.back - self.restart:.1f} s), resumed {s(self.resumed_s)} after the "
                f"restart began; /health while it was dead: {dict(self.seen)}")


class HealthUntruthful(AssertionError):
    """``/health`` did not say 503 naming the dependency while it was down, or not 200 after."""


def _assert_health_truthful(outage: Outage, final: Sample, log: str) -> None:
    if outage.noticed is None:
        raise HealthUntruthful(f"no 503 naming {outage.dependency} while it was down; "
                               f"/health said {dict(outage.seen)}")
    if outage.lies:
        raise HealthUntruthful(f"{len(outage.lies)} answers while {outage.dependency} was "
                               f"down did not name it, first {outage.lies[:3]}")
    if outage.healthy is None or final.status != 200:
        raise HealthUntruthful(f"not healthy after {outage.dependency} came back: {final}\n"
                               f"{log}")


class Supervised:
    """A worker run as a supervisor would: started again whenever it exits.

    The Kafka watchdog (services/watchdog.py) stops a worker whose consumer is stuck while
    the broker answers, and relies on the supervisor to start it again; this is that
    supervisor, checking every 0.5 s. ``restarts`` keeps the last log lines of each exit.
    """

    def __init__(self, ns: Settings, tmp: Path) -> None:
        self.ns, self.tmp = ns, tmp
        self.worker = WorkerProcess(ns, tmp)
        self.restarts: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self.worker.proc.poll() is not None and not self._stop.is_set():
                    self.restarts.append(f"exit {self.worker.proc.returncode}; first error:\n"
                                         f"{self.worker.first_error()}\nlast lines:\n"
                                         f"{self.worker.log_tail(40)}")
                    self.worker._log.close()
                    self.worker = WorkerProcess(self.ns, self.tmp)

    def health(self) -> tuple[int, dict[str, Any]]:
        return self.worker.health()

    def metrics(self) -> str:
        return self.worker.metrics()

    def log_tail(self, n: int = 60) -> str:
        return "\n\n".join([*self.restarts, self.worker.log_tail(n)])

    def alive(self) -> bool:
        return self.worker.proc.poll() is None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            self.worker.stop()

    def unexpected_restarts(self) -> list[str]:
        """Exits that were not the watchdog's stop of a stuck consumer."""
        return [r for r in self.restarts if "kafka watchdog" not in r]


@dataclass
class Run:
    """One outage scenario's outcome."""

    result: Reconciliation
    outage: Outage
    final: Sample
    alive: bool
    log: str
    wall_s: float
    checked: Any = None
    last_growth_s: float | None = None  # the counter last grew, seconds after the restart
    #: ``/health`` after the service was back: (status, waiting_for names) -> samples
    after_back: Counter[tuple[int, tuple[str, ...]]] = field(default_factory=Counter)
    #: the last log lines of each exit of the worker (its supervisor started it again)
    restarts: list[str] = field(default_factory=list)
    #: restarts that were not the Kafka watchdog stopping a stuck consumer
    unexpected: list[str] = field(default_factory=list)


def run_outage(ns: Settings, spec: Any, tmp_path: Path, *, n: int, dependency: str,
               stop: Callable[[], object], start: Callable[[], object], down_s: float,
               counter: str, check: Callable[[Reconciliation], Any] | None = None) -> Run:
    """Produce ``n`` events at :data:`RATE`; 5 s in, ``stop()``, ``down_s`` later ``start()``.

    Then wait for the producer, reconcile until nothing is missing, run ``check`` (while
    the worker still runs) and stop the worker. ``counter`` (``predicted`` or
    ``indexed``) is the metric whose growth says processing resumed.
    """
    worker = Supervised(ns, tmp_path)
    worker.worker.wait_healthy()
    outage = Outage(dependency)
    t0 = time.monotonic()
    producer = _produce_in_background(ns, spec, n, RATE)
    try:
        with HealthTrace(worker) as trace:
            time.sleep(5.0)
            outage.fault = time.monotonic()
            stop()
            outage.dead = time.monotonic()
            time.sleep(max(0.0, down_s - (time.monotonic() - outage.dead)))
            outage.restart = time.monotonic()
            start()
            outage.back = time.monotonic()
            outage.observe(trace, counter)
            producer.join(timeout=n / RATE + 90)
            result = _settled(ns, ns.topic(spec.event.topic))
            checked = check(result) if check is not None else None
            final = trace.look()
        last_growth = outage.stalled(trace, counter)
        after_back = Counter((s.status, tuple(sorted(s.waiting_for)))
                             for s in trace.between(outage.back, time.monotonic()))
        alive = worker.alive()
        log = worker.log_tail(300)
    finally:
        worker.stop()
    return Run(result, outage, final, alive, log, time.monotonic() - t0, checked, last_growth,
               after_back, list(worker.restarts), worker.unexpected_restarts())


def _assert_nothing_lost(run: Run, n: int) -> None:
    assert run.alive, run.log  # still running at the end
    # no restart, except the watchdog's stop of a consumer stuck after the outage
    assert run.unexpected == [], run.unexpected
    if not run.restarts:
        assert "stopped by an unexpected error" not in run.log and "Crashed" not in run.log
    assert run.result.events == n, run.result.row()  # the producer got every event through
    assert run.result.lost == [] and run.result.both == [], run.result


# --------------------------------------------------------------------------- Elasticsearch


def _prediction_documents(ns: Settings) -> tuple[set[str], Counter[tuple[int, int]]]:
    """Ids of ``{ns}-predictions`` (after a refresh) and documents per source offset."""
    index = ns.index("predictions")
    with elasticsearch_client(ns) as es:  # type: ignore[arg-type]
        es.indices.refresh(index=index)
        ids: set[str] = set()
        per_offset: Counter[tuple[int, int]] = Counter()
        for hit in scan(es, index=index, size=2000,
                        _source=["provenance.partition", "provenance.offset"]):
            ids.add(hit["_id"])
            prov = hit["_source"]["provenance"]
            per_offset[(int(prov["partition"]), int(prov["offset"]))] += 1
    return ids, per_offset


def _wait_documents(ns: Settings, predicted: int,
                    timeout: float = 120.0) -> tuple[set[str], Counter[tuple[int, int]]]:
    """The documents once there are 2 per predicted event (leader + challenger), or at timeout."""
    last: list[tuple[set[str], Counter[tuple[int, int]]]] = []

    def done() -> bool:
        last[:] = [_prediction_documents(ns)]
        return len(last[0][0]) >= 2 * predicted

    with contextlib.suppress(AssertionError):  # the caller asserts on what is there
        wait_for(done, timeout=timeout, every=2.0)
    return last[0]


def test_elasticsearch_down_waits_and_resumes_by_itself(es2, trained, tmp_path):
    second, ns = es2
    n = int((ES_DOWN_S + 40) * RATE)
    run = run_outage(
        ns, trained, tmp_path, n=n, dependency="elasticsearch", down_s=ES_DOWN_S,
        stop=lambda: local_stack.stop_service(second, "elasticsearch", signal.SIGTERM,
                                              echo=print),
        start=lambda: local_stack.start_service(second, "elasticsearch", echo=print),
        counter="indexed", check=lambda result: _wait_documents(ns, result.predicted))
    result, outage = run.result, run.outage
    ids, per_offset = run.checked
    print(f"Elasticsearch down {ES_DOWN_S:.0f} s: {result.row()}; {outage.line()}; "
          f"{len(ids)} documents for {len(per_offset)} offsets; /health after it was back: "
          f"{dict(run.after_back)}")
    restart = outage.back - outage.restart
    report("es-down", f"SIGTERM, down {ES_DOWN_S:.0f} s + {restart:.0f} s restart", result,
           recovery_s=outage.recovery_s, wall_s=run.wall_s,
           notes=f"{outage.notes('indexing')}; {len(ids)} documents = 2 x "
                 f"{result.predicted}: {'yes' if len(ids) == 2 * result.predicted else 'NO'}")
    _assert_nothing_lost(run, n)
    assert len(ids) == 2 * result.predicted, (len(ids), result.predicted)
    assert len(per_offset) == result.predicted and set(per_offset.values()) == {2}
    _assert_health_truthful(outage, run.final, run.log)
    assert f":{second.stack.elasticsearch_port}" in outage.noticed.waiting_for["elasticsearch"]


# --------------------------------------------------------------------------- the broker


def _prediction_ids_per_offset(ns: Settings) -> dict[tuple[int, int], set[str]]:
    """The prediction ids published for each source offset (a redelivery keeps its id)."""
    codec = Codec.for_schema("prediction")
    ids: dict[tuple[int, int], set[str]] = {}
    for m in read_all(ns, ns.topic("predictions")):
        rec = codec.decode(m.value())
        prov = rec["provenance"]
        ids.setdefault((prov["partition"], prov["offset"]), set()).add(rec["prediction_id"])
    return ids


def _group_state(ns: Settings, topic: str) -> str:
    """The score group on the broker: state, members, offsets not yet committed (diagnosis)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(ns.kafka.confluent_config())
    group = ns.group("score")
    desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
    parts = [TopicPartition(topic, p) for p in range(ns.kafka.partitions)]
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, parts)])[group].result(timeout=15)
    committed = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    return f"group {desc.state.name}, {len(desc.members)} member(s), committed {committed}"


def test_broker_kill9_waits_and_resumes_by_itself(kafka2, trained, tmp_path):
    second, ns = kafka2
    n = int((KAFKA_DOWN_S + 40) * RATE)
    run = run_outage(
        ns, trained, tmp_path, n=n, dependency="kafka", down_s=KAFKA_DOWN_S,
        stop=lambda: local_stack.stop_service(second, "kafka", signal.SIGKILL, echo=print),
        start=lambda: local_stack.start_service(second, "kafka", echo=print),
        counter="predicted",
        check=lambda _: (_prediction_ids_per_offset(ns),
                         _group_state(ns, ns.topic(trained.event.topic))))
    result, outage = run.result, run.outage
    ids, group = run.checked
    print(f"broker kill -9, down {KAFKA_DOWN_S:.0f} s: {result.row()}; {outage.line()}; "
          f"scoring last advanced {run.last_growth_s or float('nan'):.1f} s after the restart "
          f"began; {group}; /health after it was back: {dict(run.after_back)}, at the end "
          f"{run.final.status} {run.final.waiting_for}")
    restart = outage.back - outage.restart
    report("broker-kill9", f"kill -9, down {KAFKA_DOWN_S:.0f} s + {restart:.0f} s restart",
           result, recovery_s=outage.recovery_s, wall_s=run.wall_s,
           notes=outage.notes("scoring") + (f"; the watchdog stopped a stuck consumer "
                                            f"{len(run.restarts)}x, restarted"
                                            if run.restarts else ""))
    _assert_nothing_lost(run, n)
    # a prediction sent again (a lost acknowledgement) keeps its id: the index dedups it
    assert all(len(v) == 1 for v in ids.values())
    _assert_health_truthful(outage, run.final, run.log)
