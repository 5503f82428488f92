"""One model, three ways in, on the real stack: a `precog worker`, `precog serve` and
`precog score-batch` processes, the same trained models and roles.

Namespaces (each its own topics and Redis entity state; one model registry):

- ``stream``: a worker (agents ``control,score``) and a `precog serve` process; the parity
  events go in through the events topic, and the state tests use cards of their own;
- ``rest``: a `precog serve` process scoring the parity events from a fresh (empty) entity
  state, and a worker with the join agent only (its events topic stays empty);
- batch: `precog score-batch` over the parity events' Avro file, the entity state rebuilt
  from the input, starting empty (the roles read from the ``stream`` namespace).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from precog.avro import Codec
from precog.history import read_avro
from precog.io.kafka import producer as kafka_producer
from precog.io.redis import redis_client
from precog.settings import Settings
from precog.spec import PipelineSpec, load_spec
from precog.workers import REPO, WorkerProcess, free_port, stop_group, worker_env
from tests.conftest import ROOT, unique_namespace
from tests.e2e.helpers import decode_all, read_topic, wait_for

pytestmark = pytest.mark.e2e

KEY = "k-" + uuid.uuid4().hex[:8]
AUTH = {"X-API-Key": KEY}
HOUR = 3_600_000


class Served:
    """A `precog serve` subprocess for ``settings``; ``url`` once it is ready."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / f"serve-{settings.namespace}.log"
        env = {**worker_env(settings, free_port(), tmp / f"serve-data-{settings.namespace}"),
               "PRECOG_SERVE_API_KEYS": KEY}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "precog", "serve", "--port", str(port), "--loglevel",
             "warning"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"precog serve exited {self.proc.returncode}:\n"
                                     + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"precog serve not ready after {timeout}s")

    def score(self, body: Any) -> Any:
        r = httpx.post(f"{self.url}/v1/score", json=body, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def three(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Models trained once; the processes of both namespaces running; the parity events."""
    from precog.pipelines.train import train
    from precog.services.model_control import publish_roles, read_roles

    from precog.namespace import drop_namespace, setup_namespace
    from precog.simulate import write_history

    tmp = tmp_path_factory.mktemp("three-ways")
    base = Settings()
    spec_path = base.spec if base.spec.is_absolute() else ROOT / base.spec
    spec = load_spec(spec_path)
    common = {"spec": spec_path, "registry_dir": tmp / "registry", "code_version": "test",
              "score": {"batch_size": 50, "batch_timeout": 0.2}}
    stream = Settings(namespace=unique_namespace(), **common)
    rest = Settings(namespace=unique_namespace(), **common)
    with ExitStack() as stack_:
        for s in (stream, rest):
            setup_namespace(s, spec)
            stack_.callback(drop_namespace, s)
        write_history(tmp / "train", 4000, seed=7, progress=False, spec=spec)
        train(stream, spec, tmp / "train", seed=3, index=False)
        roles = read_roles(stream, spec.name)
        assert roles is not None
        publish_roles(rest, roles)
        # the parity events: seeded, the last two days, some cards with several events
        end = (int(time.time() * 1000) // HOUR) * HOUR - HOUR
        write_history(tmp / "events", 160, seed=11, end_ms=end, progress=False, spec=spec,
                      days=2)
        events = read_avro(tmp / "events" / "events.avro",
                           Codec.for_schema(spec.event.schema_name))
        procs = [WorkerProcess(stream, tmp, "control,score"), Served(stream, tmp),
                 Served(rest, tmp), WorkerProcess(rest, tmp, "join")]
        for p in procs:
            stack_.callback(p.stop)
        worker, serve_stream, serve_rest, joiner = procs
        worker.wait_healthy(timeout=180)
        serve_stream.wait_ready()
        serve_rest.wait_ready()
        wait_for(lambda: "Worker ready" in joiner.log_path.read_text(errors="replace"),
                 timeout=120)
        yield {"spec": spec, "stream": stream, "rest": rest, "events": events,
               "history": tmp / "events", "worker": worker, "serve_stream": serve_stream,
               "serve_rest": serve_rest, "joiner": joiner, "tmp": tmp}


def _produce(s: Settings, spec: PipelineSpec, events: list[dict[str, Any]]) -> None:
    """The events on the namespace's events topic, keyed by entity, in order."""
    codec = Codec.for_schema(spec.event.schema_name)
    p = kafka_producer(s, acks="all")
    for e in events:
        p.produce(s.topic(spec.event.topic), key=str(e[spec.event.entity_field]).encode(),
                  value=codec.encode(e), timestamp=int(e[spec.event.time_field]))
    assert p.flush(30) == 0


def _predictions(s: Settings, expected: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    return decode_all(read_topic(s, s.topic("predictions"), expected, timeout=timeout),
                      "prediction")


def _compared(p: dict[str, Any]) -> str:
    """What parity compares, bit for bit (repr: exact floats, NaN-safe)."""
    models = [p["leader"], *p["challengers"]]
    return repr((p["prediction_id"], p["entity_id"],
                 [(f["name"], f["value"], f["age_ms"]) for f in p["features"]],
                 [(m["model_id"], m["version"], m["role"], m["score"], m["label"],
                   m["threshold"], m["artifact_sha256"]) for m in models]))


def _card() -> str:
    """A card of its own (the spec's pattern: ``card-`` and digits)."""
    return f"card-{uuid.uuid4().int % 10**12}"


def _state(s: Settings, spec: PipelineSpec, entity: str) -> bytes | None:
    with redis_client(s) as r:
        return r.get(s.redis_key("state", spec.name, entity))


def test_stream_rest_and_batch_give_bit_identical_features_and_scores(three):
    """The same seeded events (160, two days of one simulated history) through the stream
    (the worker, micro-batches of at most 50, the state chained through Redis), through
    REST (one `/v1/score` request per event, in the file's order) and through batch
    (`precog score-batch`, chunks of 40). Each path starts from an empty entity state: the
    stream and REST in namespaces of their own, batch rebuilding the state from its input.
    Every event's features (value and age) and every model's score and label are equal."""
    spec, events, stream, rest = three["spec"], three["events"], three["stream"], three["rest"]
    n = len(events)
    assert n == 160 and len({e[spec.event.entity_field] for e in events}) < n
    _produce(stream, spec, events)
    rest_answers = [three["serve_rest"].score(e) for e in events]
    out = three["tmp"] / "batch.parquet"
    env = {**worker_env(stream, free_port(), three["tmp"] / "batch-data")}
    done = subprocess.run(
        [sys.executable, "-m", "precog", "score-batch", "--input",
         str(three["history"] / "events.avro"), "--out", str(out), "--chunk-size", "40",
         "--quiet", "--restart"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr
    streamed = {p["event_id"]: p for p in _predictions(stream, n)
                if p["provenance"]["channel"] == "stream"}
    rest_on_topic = {p["event_id"]: p for p in _predictions(rest, n)}
    batch = {r["event_id"]: r for r in pq.read_table(out).to_pylist()}
    ids = [str(e[spec.event.id_field]) for e in events]
    assert set(streamed) == set(rest_on_topic) == set(batch) == set(ids), three["worker"].log_tail()
    for event_id, answer in zip(ids, rest_answers, strict=True):
        assert answer["state"] == "updated" and answer["prediction"] == rest_on_topic[event_id]
        assert rest_on_topic[event_id]["provenance"]["channel"] == "rest"
        assert _compared(streamed[event_id]) == _compared(rest_on_topic[event_id]) \
            == _compared(batch[event_id]), event_id
    # the chained features did chain: some event saw an earlier event of its card
    assert any(f["age_ms"] > 0 for p in batch.values() for f in p["features"])


def test_a_rest_prediction_is_joined_with_its_outcome(three):
    """Predictions served over REST (namespace ``rest``, published with channel rest) are
    joined with their outcomes by the worker's join agent: one labeled record per model."""
    spec, rest = three["spec"], three["rest"]
    picked = [
        {**e, "event_id": f"join-{i}-{uuid.uuid4().hex[:6]}",
         spec.event.entity_field: _card()} for i, e in enumerate(three["events"][:12])]
    answers = [three["serve_rest"].score(e) for e in picked]
    outcomes = [{"event_id": a["event_id"], "label": i % 2,
                 "event_time": int(e[spec.event.time_field]),
                 "outcome_time": int(e[spec.event.time_field]) + HOUR, "source": "chargebacks"}
                for i, (e, a) in enumerate(zip(picked, answers, strict=True))]
    codec = Codec.for_schema(spec.outcome.schema_name)
    p = kafka_producer(rest, acks="all")
    for o in outcomes:
        p.produce(rest.topic("outcomes"), key=o["event_id"].encode(), value=codec.encode(o))
    assert p.flush(30) == 0
    models = 1 + len(answers[0]["prediction"]["challengers"])

    mine = {a["event_id"] for a in answers}
    records = _until(rest, "labeled", "labeled", lambda r: r["event_id"] in mine,
                     models * len(answers))
    assert len(records) == models * len(answers), three["joiner"].log_tail()
    by_key = {(r["event_id"], r["model_id"]): r for r in records}
    for a, o in zip(answers, outcomes, strict=True):
        pred = a["prediction"]
        for m in [pred["leader"], *pred["challengers"]]:
            r = by_key[(a["event_id"], m["model_id"])]
            assert (r["prediction_id"], r["score"], r["label"], r["role"]) == (
                a["prediction_id"], m["score"], m["label"], m["role"])
            assert (r["outcome"], r["outcome_time"]) == (o["label"], o["outcome_time"])


def _until(s: Settings, topic: str, schema: str, keep: Any, n: int,
           timeout: float = 120.0) -> list[dict[str, Any]]:
    """The records of ``{ns}.topic`` that ``keep`` selects, once there are ``n`` of them
    (read from the beginning; a second more, so that an extra one would be seen too)."""
    from confluent_kafka import Consumer, TopicPartition

    codec = Codec.for_schema(schema)
    consumer = Consumer({**s.kafka.confluent_config(), "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    name = s.topic(topic)
    parts = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, 0) for p in parts])
    got: list[dict[str, Any]] = []
    deadline, settle = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error() and keep(r := codec.decode(msg.value())):
                got.append(r)
            if settle is None and len(got) >= n:
                settle = time.monotonic() + 1.0
    finally:
        consumer.close()
    return got


def _wait_state(s: Settings, spec: PipelineSpec, entity: str, event_id: str) -> bytes:
    from precog.features import EntityState

    def held() -> bytes | None:
        raw = _state(s, spec, entity)
        return raw if raw is not None and EntityState.from_bytes(raw).holds(event_id) else None

    raw = wait_for(held, timeout=90)
    assert raw is not None, f"{event_id} never reached the state of {entity}"
    return raw


def _tx(spec: PipelineSpec, base: dict[str, Any], entity: str, n: int, t: int) -> dict[str, Any]:
    return {**base, spec.event.id_field: f"{entity}-e{n}", spec.event.entity_field: entity,
            spec.event.time_field: t}


def test_the_state_moves_once_in_both_orders_on_the_real_stack(three):
    """Namespace ``stream``: an event applied by the worker and then sent to `precog serve`
    (answered ``already-applied``, the state's bytes unchanged), and an event scored by
    `precog serve` and then arriving on the topic (scored by the worker, the state's bytes
    unchanged); the same prediction id either way."""
    from precog.features import EntityState

    spec, s, serve = three["spec"], three["stream"], three["serve_stream"]
    base, t = dict(three["events"][0]), int(time.time() * 1000) - HOUR
    # the stream first, then REST
    card = _card()
    first, second = _tx(spec, base, card, 1, t), _tx(spec, base, card, 2, t + 60_000)
    _produce(s, spec, [first])
    applied = _wait_state(s, spec, card, first["event_id"])
    again = serve.score(first)
    assert again["state"] == "already-applied" and again["replayed"] is False
    assert _state(s, spec, card) == applied
    moved = serve.score(second)  # a new event over REST still moves it
    assert moved["state"] == "updated"
    after = EntityState.from_bytes(_state(s, spec, card) or b"")
    assert after.direct == [second["event_id"]] and after.streamed == [first["event_id"]]
    assert after.counts != EntityState.from_bytes(applied).counts
    # REST first, then the stream
    card2 = _card()
    third = _tx(spec, base, card2, 1, t)
    answer = serve.score(third)
    assert answer["state"] == "updated"
    before = _state(s, spec, card2)
    _produce(s, spec, [third])

    on_topic = _until(s, "predictions", "prediction",
                      lambda p: p["event_id"] == third["event_id"]
                      and p["provenance"]["channel"] == "stream", 1)
    assert on_topic and on_topic[0]["prediction_id"] == answer["prediction_id"], \
        three["worker"].log_tail()
    time.sleep(1.0)  # the worker writes the states after the batch's predictions are acked
    assert _state(s, spec, card2) == before
    # and the first event's prediction from the stream has the id REST answered with
    first_both = _until(s, "predictions", "prediction",
                        lambda p: p["event_id"] == first["event_id"], 2)
    assert sorted(p["provenance"]["channel"] for p in first_both) == ["rest", "stream"]
    assert {p["prediction_id"] for p in first_both} == {again["prediction_id"]}
