"""Worker faults on the real stack: SIGTERM and kill -9 mid-run, hostile records between valid ones.

Each scenario produces events at a steady rate, injects the fault, then accounts for every
offset of the events topic from Kafka (tests/faults/reconcile.py): 0 lost, nothing both
predicted and dead-lettered. The workers are this test's own processes, stopped by pid.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from precog.avro import Codec
from precog.settings import Settings
from precog.simulate import SimConfig, produce_live
from precog.workers import WorkerProcess, metric_total
from tests.e2e.helpers import wait_for
from tests.faults.reconcile import Reconciliation, read_all, reconcile, report

FAST = {"PRECOG_WORKER_SESSION_TIMEOUT": "6"}


def _produce_in_background(settings: Settings, spec: Any, n: int, rate: float) -> threading.Thread:
    def run() -> None:
        produce_live(settings, spec, n, rate, SimConfig(seed=5, garbage_fraction=0.02),
                     progress=False, outcome_wait_s=0)

    thread = threading.Thread(target=run, name="producer", daemon=True)
    thread.start()
    return thread


def _settled(settings: Settings, topic: str, timeout: float = 120.0) -> Reconciliation:
    """Reconcile until nothing is lost (the last worker catching up), or the timeout."""
    last: list[Reconciliation] = []

    def done() -> bool:
        last[:] = [reconcile(settings, topic)]
        return not last[0].lost

    with contextlib.suppress(AssertionError):  # the caller asserts on what is left
        wait_for(done, timeout=timeout, every=2.0)
    return last[0]


def _interrupt_repeatedly(settings: Settings, tmp_path: Path, spec: Any, sig: int,
                          n: int = 3000, rate: float = 150.0, times: int = 3) -> Reconciliation:
    worker = WorkerProcess(settings, tmp_path, extra_env=FAST)
    worker.wait_healthy()
    producer = _produce_in_background(settings, spec, n, rate)
    for _ in range(times):
        time.sleep(4.0)
        worker.stop(sig)
        worker = WorkerProcess(settings, tmp_path, extra_env=FAST)
        worker.wait_healthy()
    producer.join(timeout=n / rate + 60)
    try:
        result = _settled(settings, settings.topic(spec.event.topic))
    finally:
        worker.stop()
    return result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
def test_worker_stopped_three_times_loses_nothing(settings: Settings, trained: Any,
                                                  tmp_path: Path, sig: int):
    started = time.monotonic()
    result = _interrupt_repeatedly(settings, tmp_path, trained, sig)
    print(f"{signal.Signals(sig).name} x3:", result.row())
    name = "sigterm" if sig == signal.SIGTERM else "kill9"
    report(f"{name}-x3", f"{'SIGTERM' if name == 'sigterm' else 'kill -9'} x3, 4 s apart, "
           f"150 events/s", result, recovery_s=None, wall_s=time.monotonic() - started)
    assert result.events == 3000
    assert result.lost == [] and result.both == []
    assert result.predicted + result.dead_letters == result.events
    if sig == signal.SIGTERM:  # a graceful stop commits what was finished
        # per stop: the score agent's batch in flight (<= 500), and the events the monitor
        # agent, reading the same topic, had not finished yet: an offset is committed
        # when every agent of its topic is done with it (0-1,498 in 11 runs of 2026-12-01)
        assert result.duplicates <= 3 * 1000


def test_kill9_one_of_two_workers_three_times_loses_nothing(
    settings: Settings, trained: Any, tmp_path: Path
):
    """The survivor takes the dead worker's partitions; the restarted one gets some back."""
    started = time.monotonic()
    survivor = WorkerProcess(settings, tmp_path, extra_env=FAST)
    survivor.wait_healthy()
    victim = WorkerProcess(settings, tmp_path, extra_env=FAST)
    victim.wait_healthy()
    n, rate = 3000, 150.0
    producer = _produce_in_background(settings, trained, n, rate)
    try:
        for _ in range(3):
            time.sleep(4.0)
            victim.stop(signal.SIGKILL)
            victim = WorkerProcess(settings, tmp_path, extra_env=FAST)
            victim.wait_healthy()
        producer.join(timeout=n / rate + 60)
        result = _settled(settings, settings.topic(trained.event.topic))
        survived = survivor.proc.poll() is None
        scored_by_survivor = _predicted(survivor)
    finally:
        victim.stop()
        survivor.stop()
    print("kill -9 x3 (1 of 2 workers):", result.row())
    report("kill9-x3-1-of-2-workers", "kill -9 one of 2 workers x3, 150 events/s", result,
           recovery_s=None, wall_s=time.monotonic() - started)
    assert survived and scored_by_survivor > 0
    assert result.events == n and result.lost == [] and result.both == []
    assert result.predicted + result.dead_letters == result.events


def test_scoring_resumes_quickly_after_kill9(settings: Settings, trained: Any, tmp_path: Path):
    """A worker killed with -9 and started again scores within the session timeout."""
    started = time.monotonic()
    worker = WorkerProcess(settings, tmp_path)
    worker.wait_healthy()
    producer = _produce_in_background(settings, trained, 1500, 100.0)
    time.sleep(4.0)
    worker.stop(signal.SIGKILL)
    killed = time.monotonic()
    worker = WorkerProcess(settings, tmp_path)
    try:
        wait_for(lambda: _predicted(worker) > 0, timeout=60, every=0.25)
        recovery = time.monotonic() - killed
        producer.join(timeout=60)
        result = _settled(settings, settings.topic(trained.event.topic))
    finally:
        worker.stop()
    print(f"kill -9: scoring resumed {recovery:.1f} s after the kill; {result.row()}")
    report("kill9-resume", "kill -9 once, restarted at once, 100 events/s", result,
           recovery_s=recovery, wall_s=time.monotonic() - started,
           notes="recovery s: from the kill until the restarted worker scored")
    assert result.lost == []
    # the default session timeout is 10 s: the group reassigns the dead member's
    # partitions after it; the bound leaves room for start-up on a loaded machine
    assert recovery < 30.0


def _predicted(worker: WorkerProcess) -> float:
    try:
        return metric_total(worker.metrics(), "precog_predictions_out_total")
    except OSError:
        return 0.0


def _valid(i: int, now: int) -> dict[str, Any]:
    return {"event_id": f"ok-{i}", "card_id": f"card-{i % 7}", "customer_id": f"c{i % 7}",
            "merchant_id": f"m{i % 5}", "category": "fuel", "amount": 20.0 + i,
            "currency": "EUR", "country": "DE", "channel": "pos", "event_time": now - 1000 + i}


def hostile_corpus(codec: Codec, now: int) -> dict[str, bytes | None]:
    """Every hostile record of issue 12, by name (the value to produce; None = tombstone)."""
    base = _valid(0, now)
    good = codec.encode({**base, "event_id": "h-trailing"})
    return {
        "tombstone": None,
        "empty": b"",
        "truncated-header": good[:5],
        "bad-marker": b"\x00\x00" + good[2:],
        "trailing-bytes": good + b"\x00\x01",
        "corrupt-body": good[:10] + b"\xff" * 8,
        "event-time-min-long": codec.encode({**base, "event_id": "h-tmin", "event_time": -2**63}),
        "event-time-zero": codec.encode({**base, "event_id": "h-t0", "event_time": 0}),
        "event-time-negative": codec.encode({**base, "event_id": "h-tneg", "event_time": -5}),
        "event-time-future": codec.encode({**base, "event_id": "h-tfut",
                                           "event_time": now + 365 * 86_400_000}),
        "amount-nan": codec.encode({**base, "event_id": "h-nan", "amount": float("nan")}),
        "amount-huge": codec.encode({**base, "event_id": "h-huge", "amount": 1e300}),
        "string-900kb": codec.encode({**base, "event_id": "h-big",
                                      "merchant_id": "m" * 900_000}),
        "event-id-600kb": codec.encode({**base, "event_id": "e" * 600_000}),
    }


def test_hostile_records_never_touch_their_neighbours(settings: Settings, trained: Any,
                                                      tmp_path: Path):
    started = time.monotonic()
    codec = Codec.for_schema(trained.event.schema_name)
    topic = settings.topic(trained.event.topic)
    now = int(time.time() * 1000)
    corpus = hostile_corpus(codec, now)
    producer = Producer(settings.kafka.producer_config(**{"message.max.bytes": 2_000_000}))
    expected_ok = []
    i = 0
    with_worker = WorkerProcess(settings, tmp_path)
    try:
        with_worker.wait_healthy()
        for name, value in corpus.items():
            for _ in range(2):  # valid, hostile, valid: every hostile between two valid ones
                rec = _valid(i, now)
                expected_ok.append(rec["event_id"])
                producer.produce(topic, key=rec["card_id"].encode(), value=codec.encode(rec))
                i += 1
                if _ == 0:
                    producer.produce(topic, key=b"card-0", value=value,
                                     headers=[("case", name.encode())])
        assert producer.flush(30) == 0
        result = _settled(settings, topic, timeout=90)
        status, body = with_worker.health()
        alive = with_worker.proc.poll() is None
        log = with_worker.log_tail(200)
    finally:
        with_worker.stop()
    print("hostile corpus:", result.row())
    report("hostile-corpus", f"{len(corpus)} hostile records, each between two valid ones",
           result, recovery_s=None, wall_s=time.monotonic() - started,
           notes=f"/health {status} at the end")
    assert alive and status == 200, (status, body, log)
    assert "Crashed" not in log and "stopped by an unexpected error" not in log
    assert result.lost == [] and result.both == [] and result.duplicates == 0
    assert result.dead_letters == len(corpus) and result.predicted == len(expected_ok)
    # every hostile record has its own precise reason
    dlq = Codec.for_schema("dead_letter")
    reasons = {}
    for m in read_all(settings, settings.topic("dlq")):
        rec = dlq.decode(m.value())
        reasons[rec["offset"], rec["partition"]] = (rec["stage"], rec["error_message"])
    assert len(reasons) == len(corpus)
    assert all(msg.strip() and not msg.rstrip().endswith(":") for _, msg in reasons.values())
    assert len({msg for _, msg in reasons.values()}) == len(corpus), reasons
    for m in read_all(settings, settings.topic("dlq")):
        assert len(m.value()) < 1_000_000
