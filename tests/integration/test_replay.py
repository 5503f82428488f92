"""precog replay on the real Kafka and Redis: ranges, records kept as they were, outcomes
merged by time, warm-up state, and interrupted replays that resume without duplicates."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from precog.services.feature_store import RedisOnlineStore

from precog.avro import Codec
from precog.features import Featurizer
from precog.namespace import drop_namespace, setup_namespace
from precog.replay.runner import ReplayInterrupted, ReplayRequest, read_topic, replay
from precog.settings import Settings
from precog.simulate import SimConfig, simulator_for
from precog.spec import load_spec
from tests.conftest import ROOT, unique_namespace

pytestmark = pytest.mark.integration

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


@pytest.fixture
def parallel(settings: Settings) -> Iterator[Settings]:
    """A second namespace on the same services (and registry) as ``settings``."""
    s = settings.model_copy(update={"namespace": unique_namespace()})
    setup_namespace(s, load_spec(s.spec))
    yield s
    drop_namespace(s)


def _produce(settings: Settings, topic: str, records: list[dict[str, Any]]) -> None:
    producer = Producer({**settings.kafka.producer_config(), "enable.idempotence": True})
    errors: list[Any] = []
    for r in records:
        producer.produce(topic, key=r["key"], value=r["value"], headers=r.get("headers"),
                         timestamp=r["ts"], partition=r["partition"],
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors


def _raw_records(n: int, partitions: int = 4, step_ms: int = 100, seed: int = 0
                 ) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = f"card-{rng.randrange(40)}".encode()
        out.append({
            "key": key, "partition": int(key[5:]) % partitions,
            "value": rng.randbytes(rng.randrange(5, 60)),
            "headers": [("trace", str(i).encode()), ("origin", b"test")],
            "ts": T0 + i * step_ms,
        })
    return out


def _request(settings: Settings, parallel: Settings, tmp_path: Any, **kw: Any
             ) -> ReplayRequest:
    """A replay of the spec's events from ``settings`` into ``parallel``, quiet."""
    return ReplayRequest(settings, parallel, load_spec(settings.spec), checkpoint_dir=tmp_path,
                         progress=False, **kw)


def _as_written(messages: list[Any]) -> dict[int, list[tuple]]:
    """partition -> [(key, value, headers, timestamp)] in offset order."""
    out: dict[int, list[tuple]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        out[m.partition()].append((m.key(), m.value(), tuple(m.headers() or ()),
                                   m.timestamp()[1]))
    return dict(out)


def test_a_replay_keeps_keys_headers_times_partitions_and_order(settings, parallel, tmp_path):
    spec = load_spec(settings.spec)
    records = _raw_records(300)
    _produce(settings, settings.topic(spec.event.topic), records)
    summary = replay(_request(settings, parallel, tmp_path))
    assert summary.sent == summary.planned == 300 and summary.complete
    source = _as_written(read_topic(settings, spec.event.topic))
    target = _as_written(read_topic(parallel, spec.event.topic))
    assert target == source
    # a second run of a finished replay sends nothing
    again = replay(_request(settings, parallel, tmp_path))
    assert again.sent == 0 and again.resumed
    assert sum(map(len, _as_written(read_topic(parallel, spec.event.topic)).values())) == 300


def test_time_range_uses_offsets_for_times_and_merges_outcomes_by_time(
        settings, parallel, tmp_path):
    spec = load_spec(settings.spec)
    events = _raw_records(200, step_ms=1000)  # T0 .. T0+199 s
    outcomes = [{**r, "ts": r["ts"] + 30_000, "headers": None} for r in _raw_records(
        200, step_ms=1000, seed=1)]
    _produce(settings, settings.topic(spec.event.topic), events)
    _produce(settings, settings.topic(spec.outcome.topic), outcomes)
    start, end = T0 + 50_000, T0 + 150_000
    summary = replay(_request(settings, parallel, tmp_path, start_ms=start, end_ms=end,
                              with_outcomes=True))
    got = read_topic(parallel, spec.event.topic)
    assert sorted(m.timestamp()[1] for m in got) == list(range(start, end, 1000))
    got_out = read_topic(parallel, spec.outcome.topic)
    expected_out = [r["ts"] for r in outcomes if start <= r["ts"] < end]
    assert sorted(m.timestamp()[1] for m in got_out) == expected_out
    assert summary.sent == 100 and summary.outcomes_sent == len(expected_out) == 100


def test_offset_range_per_partition(settings, parallel, tmp_path):
    spec = load_spec(settings.spec)
    _produce(settings, settings.topic(spec.event.topic), _raw_records(200))
    source = _as_written(read_topic(settings, spec.event.topic))
    replay(_request(settings, parallel, tmp_path, start_offsets="5",
                    end_offsets="0:20,1:20,2:20,3:20"))
    target = _as_written(read_topic(parallel, spec.event.topic))
    assert target == {p: rows[5:20] for p, rows in source.items()}


def test_stop_after_k_records_then_resume_sends_each_record_once(settings, parallel, tmp_path):
    spec = load_spec(settings.spec)
    records = _raw_records(1000)
    _produce(settings, settings.topic(spec.event.topic), records)
    with pytest.raises(ReplayInterrupted):
        # the checkpoint is never written after the start: everything sent before the stop
        # is found on the target when resuming
        replay(_request(settings, parallel, tmp_path, stop_after=437, checkpoint_every_s=3600))
    assert len(read_topic(parallel, spec.event.topic)) == 437
    summary = replay(_request(settings, parallel, tmp_path))
    assert summary.resumed and summary.skipped_delivered == 437
    assert summary.sent == 1000 - 437
    target = _as_written(read_topic(parallel, spec.event.topic))
    assert target == _as_written(read_topic(settings, spec.event.topic))


def _cli_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PRECOG_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
                "PRECOG_REDIS_URL": settings.redis.url, "PRECOG_SPEC": str(settings.spec),
                "PRECOG_REGISTRY_DIR": str(settings.registry_dir)})
    return env


def test_a_replay_killed_mid_way_resumes_with_every_record_exactly_once(
        settings, parallel, tmp_path):
    spec = load_spec(settings.spec)
    records = _raw_records(800, step_ms=50)  # 40 s of record time; at 10x about 4 s
    _produce(settings, settings.topic(spec.event.topic), records)
    cmd = [sys.executable, "-m", "precog", "replay", "run", "--from-namespace",
           settings.namespace, "--to-namespace", parallel.namespace, "--pace", "10x",
           "--checkpoint-dir", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_cli_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    ckpt = tmp_path / parallel.namespace / f"{spec.event.topic}.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ckpt.exists() and json.loads(ckpt.read_text())["sent"] >= 150:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    state = json.loads(ckpt.read_text())
    assert not state["complete"] and 150 <= state["sent"] < 800
    partial = len(read_topic(parallel, spec.event.topic))
    assert 150 <= partial < 800

    done = subprocess.run([*cmd[:9], "--pace", "max", *cmd[11:]], cwd=ROOT,
                          env=_cli_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    target = read_topic(parallel, spec.event.topic)
    traces = Counter(dict(m.headers())["trace"] for m in target)
    assert len(traces) == 800 and set(traces.values()) == {1}, "lost or duplicated records"
    assert _as_written(target) == _as_written(read_topic(settings, spec.event.topic))


def test_warm_up_rebuilds_state_without_watermarks_and_leaves_production_alone(
        settings, parallel, tmp_path, redis_client):
    spec = load_spec(settings.spec)
    sim = simulator_for(SimConfig(seed=5, entities=30, start_ms=T0, diurnal=False,
                                  mean_interarrival_ms=1000.0, garbage_fraction=0.05))
    codec = Codec.for_schema(spec.event.schema_name)
    evs = list(sim.events(400))
    rows = []
    for ev in evs:
        key = str(ev.record[spec.event.entity_field]).encode()
        value = ev.garbage if ev.garbage is not None else codec.encode(ev.record)
        rows.append({"key": key, "value": value, "partition": int(key[5:]) % 4,
                     "ts": int(ev.record[spec.event.time_field])})
    _produce(settings, settings.topic(spec.event.topic), rows)
    start = rows[250]["ts"]
    summary = replay(_request(settings, parallel, tmp_path, start_ms=start, warmup_start_ms=T0))
    valid_before = [ev.record for ev in evs[:250] if ev.valid
                    and ev.garbage is None]
    # the simulator's "impossible" garbage decodes but fails validation: skipped too
    fz, expected = Featurizer(spec), {}
    for rec in valid_before:
        entity = str(rec[spec.event.entity_field])
        _, expected[entity] = fz.featurize(expected.get(entity), rec)
    store = RedisOnlineStore(parallel, spec)
    got = store.read_sync(list(expected))
    assert got == expected  # states equal, watermarks (applied) empty
    assert all(s is not None and s.applied == {} for s in got.values())
    assert summary.warmup_events == len(valid_before) and summary.sent == 150
    assert summary.warmup_skipped == 250 - len(valid_before)
    assert not list(redis_client.scan_iter(match=f"{settings.namespace}:*"))
