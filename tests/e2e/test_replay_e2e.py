"""Production-parallel end to end: a production run is replayed into parallel namespaces on
the same Kafka, Redis and Elasticsearch; the parallel stack reproduces every score (same
models and code) or runs its own leader and code version from a warm-up; ``compare``
reports both; production stays byte-for-byte untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient
from elasticsearch import helpers
from precog.pipelines.train import train
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from precog.avro import Codec
from precog.io.elasticsearch import elasticsearch_client
from precog.io.redis import redis_client
from precog.namespace import drop_namespace, setup_namespace
from precog.replay.compare import LEADER, latest_outcomes
from precog.replay.runner import (
    ReplayRequest,
    compare_namespaces,
    copy_roles,
    namespace_settings,
    read_range,
    read_topic,
    replay,
)
from precog.settings import Settings
from precog.simulate import SimConfig, simulator_for, write_history
from precog.spec import PipelineSpec, load_spec
from tests.conftest import ROOT, unique_namespace
from tests.e2e.helpers import running_worker, worker_env

pytestmark = pytest.mark.e2e
AGENTS = "control,score,index"


# --------------------------------------------------------------------------- snapshot


def _kafka_snapshot(s: Settings) -> dict[str, Any]:
    """Per topic and partition of the namespace: watermarks and a hash of every record
    (key, value, headers, timestamp); committed offsets of the namespace's groups."""
    admin = AdminClient(s.kafka.confluent_config())
    topics = admin.list_topics(timeout=10).topics
    out: dict[str, Any] = {}
    ranges = {}
    for name in sorted(t for t in topics if t.startswith(f"{s.namespace}.")):
        for p in sorted(topics[name].partitions):
            ranges[(name, p)] = (0, 1 << 62)
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**s.kafka.confluent_config(), "group.id": "snapshot-unused"})
    marks = {k: c.get_watermark_offsets(TopicPartition(*k), timeout=10) for k in ranges}
    c.close()
    digests = {k: hashlib.sha256() for k in ranges}
    counts = Counter[tuple[str, int]]()
    reader = s.model_copy(update={"namespace": "snapshot"})
    for m in read_range(s, {k: marks[k] for k in ranges}, owner=reader):
        k = (m.topic(), m.partition())
        digests[k].update(repr((m.offset(), m.key(), m.value(), m.headers(),
                                m.timestamp())).encode())
        counts[k] += 1
    for k in ranges:
        out[f"{k[0]}[{k[1]}]"] = (marks[k], counts[k], digests[k].hexdigest())
    groups = sorted(g.group_id for g in admin.list_consumer_groups().result(10).valid
                    if g.group_id.startswith(s.group("")))
    for g in groups:
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(10)
        offsets = sorted((tp.topic, tp.partition, tp.offset) for tp in res.topic_partitions)
        # a group without offsets holds no state, and the broker removes it once its last
        # member left (the worker's Faust group, when only the batch-transport agents ran)
        if offsets:
            out[f"group {g}"] = offsets
    return out


def _es_snapshot(s: Settings) -> dict[str, Any]:
    with elasticsearch_client(s) as es:  # type: ignore[arg-type]
        names = sorted(es.indices.get(index=f"{s.namespace}-*", expand_wildcards="all"))
        out: dict[str, Any] = {}
        for name in names:
            es.indices.refresh(index=name)
            docs = sorted((h["_id"], json.dumps(h["_source"], sort_keys=True))
                          for h in helpers.scan(es, index=name, query={"query": {"match_all": {}}}))
            out[name] = (len(docs), hashlib.sha256(repr(docs).encode()).hexdigest())
        return out


def _redis_snapshot(s: Settings) -> dict[str, str]:
    client = redis_client(s)
    try:
        return {k.decode(): hashlib.sha256(client.dump(k) or b"").hexdigest()
                for k in sorted(client.scan_iter(match=f"{s.namespace}:*", count=1000))}
    finally:
        client.close()


def snapshot(s: Settings) -> dict[str, Any]:
    return {"kafka": _kafka_snapshot(s), "es": _es_snapshot(s), "redis": _redis_snapshot(s)}


# --------------------------------------------------------------------------- production


@dataclass
class Live:
    sent: int
    valid: int
    outcomes_sent: int


@dataclass
class Production:
    settings: Settings
    spec: PipelineSpec
    live: Live
    predictions: list[dict[str, Any]]
    dead: list[Any]
    outcomes: dict[str, int]
    before: dict[str, Any]
    tmp: Path


def _wait_docs(s: Settings, expected: int, timeout: float = 60) -> int:
    with elasticsearch_client(s) as es:  # type: ignore[arg-type]
        deadline, count = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            es.indices.refresh(index=s.index("predictions"))
            count = int(es.count(index=s.index("predictions"))["count"])
            if count >= expected:
                return count
            time.sleep(0.5)
        return count


def _predictions(s: Settings, expected: int) -> list[dict[str, Any]]:
    from tests.e2e.helpers import read_topic as read_until

    return [Codec.for_schema("prediction").decode(m.value())
            for m in read_until(s, s.topic("predictions"), expected, settle=1.5)]


def _outcomes(s: Settings, spec: PipelineSpec) -> dict[str, int]:
    codec = Codec.for_schema(spec.outcome.schema_name)
    return latest_outcomes([codec.decode(m.value()) for m in read_topic(s, spec.outcome.topic)])


def _produce_production(s: Settings, spec: PipelineSpec, n: int) -> tuple[int, int, int]:
    """A month-old stretch of traffic as an upstream producer would have sent it: events
    keyed by card with their event time as record time, 5 % garbage, and every outcome
    (known by now) keyed by event id at its outcome time. Returns (valid, garbage, outcomes).
    """
    start = int(time.time() * 1000) - 30 * 86_400_000
    sim = simulator_for(SimConfig(seed=3, garbage_fraction=0.05, positive_rate=0.05,
                                  start_ms=start, diurnal=False, mean_interarrival_ms=60_000))
    codec, out_codec = Codec.for_schema("transaction"), Codec.for_schema("outcome")
    producer = Producer({**s.kafka.producer_config(), "enable.idempotence": True})
    valid = garbage = 0
    outcomes = []
    for ev in sim.events(n):
        t = int(ev.record["event_time"])
        value = ev.garbage if ev.garbage is not None else codec.encode(ev.record)
        producer.produce(s.topic(spec.event.topic), key=str(ev.record["card_id"]).encode(),
                         value=value, timestamp=t)
        if ev.garbage is not None:
            garbage += 1
            continue
        valid += 1
        assert ev.outcome_time is not None and ev.outcome_time < time.time() * 1000
        outcomes.append((ev.outcome_time, str(ev.record["event_id"]), out_codec.encode({
            "event_id": ev.record["event_id"], "label": int(ev.label or 0),
            "event_time": t, "outcome_time": ev.outcome_time, "source": "chargebacks"})))
    for when, eid, value in sorted(outcomes):
        producer.produce(s.topic(spec.outcome.topic), key=eid.encode(), value=value,
                         timestamp=when)
    assert producer.flush(30) == 0
    return valid, garbage, len(outcomes)


@pytest.fixture(scope="module")
def production(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    """A finished production run: trained models, a worker that scored 500 events (5 %
    garbage) whose outcomes are known; then a snapshot of everything named for it."""
    tmp = tmp_path_factory.mktemp("replay-e2e")
    base = Settings()
    s = Settings(namespace=unique_namespace(), spec=ROOT / base.spec,
                 registry_dir=tmp / "registry")
    spec = load_spec(s.spec)
    setup_namespace(s, spec)
    try:
        write_history(tmp / "history", 10_000, seed=1, progress=False,
                      spec=spec)
        train(s, spec, tmp / "history")
        with running_worker(s, tmp, agents=AGENTS):
            valid, garbage, n_out = _produce_production(s, spec, 500)
            preds = _predictions(s, valid)
            dead = read_topic(s, "dlq")
            assert _wait_docs(s, 2 * valid) == 2 * valid
        assert len(preds) == valid and len(dead) == garbage > 0
        live = Live(sent=500, valid=valid, outcomes_sent=n_out)
        yield Production(s, spec, live, preds, dead, _outcomes(s, spec), snapshot(s), tmp)
    finally:
        drop_namespace(s)


@pytest.fixture
def parallel(production: Production) -> Iterator[Settings]:
    """An empty parallel namespace sharing production's services and model registry."""
    s = namespace_settings(production.settings, unique_namespace())
    setup_namespace(s, production.spec)
    yield s
    drop_namespace(s)


def _dead_letters(messages: list[Any]) -> Counter[tuple[Any, ...]]:
    codec = Codec.for_schema("dead_letter")
    recs = [codec.decode(m.value()) for m in messages]
    return Counter((r["key"], r["payload"], r["stage"], r["error_class"]) for r in recs)


def _sk(y: list[int], labels: list[int], scores: list[float]) -> dict[str, float]:
    assert 0 < sum(y) < len(y), "both classes are needed for the metrics to mean something"
    return {"accuracy": accuracy_score(y, labels),
            "precision": precision_score(y, labels, zero_division=0),
            "recall": recall_score(y, labels, zero_division=0),
            "f1": f1_score(y, labels, zero_division=0), "roc_auc": roc_auc_score(y, scores)}


def _leader_metrics(preds: list[dict[str, Any]], outcomes: dict[str, int]) -> dict[str, float]:
    joined = [(outcomes[p["event_id"]], p["leader"]) for p in preds if p["event_id"] in outcomes]
    return _sk([y for y, _ in joined], [m["label"] for _, m in joined],
               [m["score"] for _, m in joined])


def _assert_metrics(report: Any, side: str, expected: dict[str, float], n: int) -> None:
    got = next(m for m in report.metrics if m.side == side and m.model_id == LEADER)
    assert got.n_labels == n
    for name, value in expected.items():
        assert getattr(got, name) == pytest.approx(value, abs=1e-12), name


# --------------------------------------------------------------------------- tests


def test_same_models_and_code_reproduce_every_score_and_dead_letter(production, parallel):
    prod, spec = production.settings, production.spec
    roles = copy_roles(prod, parallel, spec)
    summary = replay(ReplayRequest(prod, parallel, spec, with_outcomes=True, progress=False,
                                   checkpoint_dir=production.tmp / "ckpt"))
    assert summary.sent == 500 and summary.outcomes_sent == production.live.outcomes_sent
    with running_worker(parallel, production.tmp, agents=AGENTS):
        par_preds = _predictions(parallel, production.live.valid)
        par_dead = read_topic(parallel, "dlq")
        report = compare_namespaces(prod, parallel, spec, index_into=parallel, now_ms=1)

    # identical scores for every event: exactly equal floats, leader and challenger
    left = {p["event_id"]: p for p in production.predictions}
    right = {p["event_id"]: p for p in par_preds}
    assert len(par_preds) == len(right) == len(left) == production.live.valid
    assert right.keys() == left.keys()
    for eid, p in left.items():
        q = right[eid]
        assert q["features"] == p["features"], eid
        assert q["leader"] == p["leader"] and q["challengers"] == p["challengers"], eid
        assert q["provenance"]["namespace"] == parallel.namespace
    # the same dead letters (same bytes, same reasons)
    assert _dead_letters(par_dead) == _dead_letters(production.dead)
    # compare says so too
    assert report.events_both == production.live.valid and report.only_left == 0
    assert report.only_right == 0 and report.leader_agreement == 1.0
    assert report.dead_letters_left == report.dead_letters_right == len(production.dead)
    assert {(m.model_id, m.equal, m.max_abs_diff) for m in report.models} == {
        (r.model_id, production.live.valid, 0.0) for r in roles.active}
    assert report.disagreements == []
    outcomes = production.outcomes
    assert _outcomes(parallel, spec) == outcomes and len(outcomes) == production.live.valid
    expected = _leader_metrics(production.predictions, outcomes)
    n = len(outcomes.keys() & left.keys())
    _assert_metrics(report, "left", expected, n)
    _assert_metrics(report, "right", expected, n)
    with elasticsearch_client(parallel) as es:  # type: ignore[arg-type]
        kinds = Counter(h["_source"]["kind"] for h in helpers.scan(
            es, index=parallel.index("replay-compare")))
    assert kinds == {"summary": 1, "model": 2, "metrics": 6}
    # production untouched: topics, groups, indices and Redis keys
    assert snapshot(prod) == production.before


def test_warm_up_a_different_leader_and_code_version_in_parallel(production, parallel):
    prod, spec = production.settings, production.spec
    par = parallel.model_copy(update={"code_version": "parallel-e2e"})
    copy_roles(prod, par, spec)
    # the parallel stack's own model-control, changed through the normal CLI
    env = worker_env(par, 6066, production.tmp)
    for args in (["set-leader", "fraud-logreg", "1", "--reason", "try logreg"],
                 ["add-challenger", "fraud-lgbm", "1"]):
        done = subprocess.run([sys.executable, "-m", "precog", "models", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    # replay the second half; the first half only rebuilds the feature state
    times = sorted(m.timestamp()[1] for m in read_topic(prod, spec.event.topic))
    summary = replay(ReplayRequest(prod, par, spec, start_ms=times[250],
                                   warmup_start_ms=times[0], with_outcomes=True,
                                   progress=False, checkpoint_dir=production.tmp / "c2"))
    assert summary.warmup_entities > 0 and summary.sent == 250
    ranges = json.loads(Path(summary.checkpoint).read_text())["ranges"][prod.topic(
        spec.event.topic)]
    replayed = {p["event_id"] for p in production.predictions
                if p["provenance"]["offset"] >= ranges[str(p["provenance"]["partition"])][0]}
    with running_worker(par, production.tmp, agents=AGENTS):
        par_preds = _predictions(par, len(replayed))
        report = compare_namespaces(prod, par, spec, top=5)

    assert {p["event_id"] for p in par_preds} == replayed
    assert {p["provenance"]["code_version"] for p in par_preds} == {"parallel-e2e"}
    assert report.code_versions_right == ["parallel-e2e"]
    # what production recorded (the code version of its worker)
    assert report.code_versions_left == sorted(
        {p["provenance"]["code_version"] for p in production.predictions})
    assert {p["leader"]["model_id"] for p in par_preds} == {"fraud-logreg"}
    # the warm-up gave the first replayed events production's features: the same models
    # score exactly the same, whatever their role
    assert report.events_both == len(replayed) and report.only_right == 0
    assert report.only_left == production.live.valid - len(replayed)
    assert {m.model_id: (m.count, m.equal) for m in report.models} == {
        "fraud-lgbm": (len(replayed), len(replayed)),
        "fraud-logreg": (len(replayed), len(replayed))}
    # leader agreement = production's lgbm decision vs production's logreg decision
    left = [p for p in production.predictions if p["event_id"] in replayed]
    agree = sum(p["leader"]["label"] == p["challengers"][0]["label"] for p in left)
    assert report.leader_agreements == agree and report.leader_agreement == agree / len(left)
    # the largest disagreements: decisions that differ first, then |lgbm - logreg|, as an
    # offline recomputation from production's own leader and challenger scores says
    def gap(p: dict[str, Any]) -> float:
        return abs(p["challengers"][0]["score"] - p["leader"]["score"])

    expected_top = sorted(left, key=lambda p: (p["leader"]["label"] == p["challengers"][0][
        "label"], -gap(p), p["event_id"]))[:5]
    top = report.disagreements
    assert [d.event_id for d in top] == [p["event_id"] for p in expected_top]
    assert [d.abs_diff for d in top] == [gap(p) for p in expected_top] and top[0].abs_diff > 0
    assert all(d.left_model_id == "fraud-lgbm" and d.right_model_id == "fraud-logreg"
               and d.feature_diffs == {} for d in top)
    # each side's metrics equal sklearn on that side's own (prediction, outcome) pairs
    par_out = _outcomes(par, spec)
    assert par_out and set(par_out) <= set(production.outcomes)
    _assert_metrics(report, "left", _leader_metrics(production.predictions,
                                                    production.outcomes),
                    len(production.outcomes.keys() & {p["event_id"]
                                                      for p in production.predictions}))
    _assert_metrics(report, "right", _leader_metrics(par_preds, par_out),
                    len(par_out.keys() & replayed))
    assert snapshot(prod) == production.before
