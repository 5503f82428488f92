"""Dependency outages on the real services: Redis down, Redis restarted empty (and rebuilt).

The worker uses the main stack's Kafka and Elasticsearch and a Redis of a second,
disposable stack (own home and port) that this test starts, stops and kills by pid; the
main stack is never touched. Each scenario produces events at a steady rate, injects the
fault mid-run and accounts for every offset of the events topic (tests/faults/reconcile.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from precog.pipelines.backfill import rebuild_from_topic

from precog import stack as local_stack
from precog.avro import Codec
from precog.errors import EventError
from precog.features import Featurizer
from precog.settings import RedisSettings, Settings
from precog.validation import check_event
from precog.workers import WorkerProcess, second_stack_settings
from tests.e2e.helpers import wait_for
from tests.faults.reconcile import read_all, report
from tests.faults.test_worker_faults import _produce_in_background, _settled

#: seconds Redis stays down (``PRECOG_FAULTS_REDIS_DOWN_S``; the full run uses 60)
REDIS_DOWN_S = float(os.environ.get("PRECOG_FAULTS_REDIS_DOWN_S", "20"))


@pytest.fixture
def redis2(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    """(second stack, namespace settings using its Redis): a Redis only this test owns."""
    second = second_stack_settings(tmp_path / "stack2")
    local_stack.up(second, echo=print, only=("redis",))
    ns = settings.model_copy(update={"redis": RedisSettings(url=second.stack.redis_url)})
    try:
        yield second, ns
    finally:
        local_stack.down(second, echo=print, timeout=20)


def _health(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    try:
        return worker.health()
    except OSError:
        return 0, {}


def _wait_health(worker: WorkerProcess, want: int, naming: str | None = None,
                 timeout: float = 60.0) -> float:
    """Seconds until /health answers ``want`` (and names ``naming`` in ``waiting_for``)."""
    start = time.monotonic()

    def ok() -> bool:
        status, body = _health(worker)
        return status == want and (naming is None or naming in body.get("waiting_for", {}))

    wait_for(ok, timeout=timeout, every=0.2)
    return time.monotonic() - start


def test_redis_down_waits_and_resumes_by_itself(redis2, trained, tmp_path):
    second, ns = redis2
    started = time.monotonic()
    worker = WorkerProcess(ns, tmp_path)
    worker.wait_healthy()
    pid = worker.proc.pid
    n, rate = int(REDIS_DOWN_S * 100 + 1500), 100.0
    producer = _produce_in_background(ns, trained, n, rate)
    try:
        time.sleep(5.0)
        local_stack.stop_service(second, "redis", signal.SIGTERM, echo=print)
        noticed = _wait_health(worker, 503, naming="redis", timeout=30)
        status, body = _health(worker)
        assert "127.0.0.1:" in body["waiting_for"]["redis"]  # names the address
        time.sleep(REDIS_DOWN_S)
        local_stack.start_service(second, "redis", echo=print)
        back = time.monotonic()
        _wait_health(worker, 200, timeout=60)
        recovered = time.monotonic() - back
        producer.join(timeout=n / rate + 60)
        result = _settled(ns, ns.topic(trained.event.topic))
        alive = worker.proc.poll() is None and worker.proc.pid == pid
        log = worker.log_tail(300)
    finally:
        worker.stop()
    print(f"Redis down {REDIS_DOWN_S:.0f} s: {result.row()}; 503 after {noticed:.1f} s, "
          f"healthy {recovered:.1f} s after Redis was back")
    report("redis-down", f"SIGTERM, down {REDIS_DOWN_S:.0f} s", result, recovery_s=recovered,
           wall_s=time.monotonic() - started,
           notes=f"503 after {noticed:.1f} s; same worker process: {'yes' if alive else 'NO'}")
    assert alive, log
    assert "stopped by an unexpected error" not in log
    assert result.events == n and result.lost == [] and result.both == []


def _offline_features(ns: Settings, spec: Any) -> dict[tuple[int, int], list[float]]:
    """Features of every valid event from one uninterrupted chain (a run without faults)."""
    featurizer = Featurizer(spec)
    codec = Codec.for_schema(spec.event.schema_name)
    states: dict[str, Any] = {}
    out: dict[tuple[int, int], list[float]] = {}
    messages = read_all(ns, ns.topic(spec.event.topic))
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        try:
            record = codec.decode(msg.value())
        except EventError:
            continue
        if check_event(spec, record, msg.timestamp()[1]):
            continue
        (vector,), new = featurizer.featurize_batch(
            states, [(record, msg.partition(), msg.offset())])
        states.update(new)
        out[(msg.partition(), msg.offset())] = list(vector.values)
    return out


def test_redis_restarted_empty_is_detected_rebuilt_and_exact(redis2, trained, tmp_path):
    second, ns = redis2
    started = time.monotonic()
    worker = WorkerProcess(ns, tmp_path)
    worker.wait_healthy()
    n, rate = 2500, 100.0
    producer = _produce_in_background(ns, trained, n, rate)
    try:
        time.sleep(6.0)
        local_stack.stop_service(second, "redis", signal.SIGTERM, echo=print)
        shutil.rmtree(second.stack.home / "redis" / "data")  # every entity state is gone
        local_stack.start_service(second, "redis", echo=print)
        noticed = _wait_health(worker, 503, naming="redis-state", timeout=30)
        rebuilt = rebuild_from_topic(ns, trained, log=print)
        back = time.monotonic()
        _wait_health(worker, 200, timeout=60)
        recovered = time.monotonic() - back
        producer.join(timeout=n / rate + 60)
        result = _settled(ns, ns.topic(trained.event.topic))
        log = worker.log_tail(400)
    finally:
        worker.stop()
    print(f"Redis restarted empty: {result.row()}; state loss seen after {noticed:.1f} s, "
          f"{rebuilt} entities rebuilt, scoring {recovered:.1f} s after the rebuild")
    report("redis-empty", "data deleted, restarted, rebuilt with rebuild_from_topic", result,
           recovery_s=recovered, wall_s=time.monotonic() - started,
           notes=f"state loss on /health after {noticed:.1f} s; {rebuilt} entities rebuilt; "
                 "recovery s: from the rebuild to /health 200")
    assert result.events == n and result.lost == [] and result.both == []
    assert "feature state lost" in log and "ALERT quality" in log
    # the features of every event equal those of one uninterrupted chain; only a
    # redelivered event (more than one prediction) may differ, and only in its copies
    expected = _offline_features(ns, trained)
    codec = Codec.for_schema("prediction")
    got: dict[tuple[int, int], list[list[float]]] = {}
    for m in read_all(ns, ns.topic("predictions")):
        rec = codec.decode(m.value())
        key = (rec["provenance"]["partition"], rec["provenance"]["offset"])
        got.setdefault(key, []).append([f["value"] for f in rec["features"]])
    once = {k: v[0] for k, v in got.items() if len(v) == 1}
    assert len(once) > 0.9 * len(expected)
    mismatched = [k for k, values in once.items() if values != expected[k]]
    assert mismatched == [], Counter(p for p, _ in mismatched)
