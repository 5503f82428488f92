"""The scoring path end to end on the real stack: simulator -> worker -> topics -> Elasticsearch."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from precog.pipelines.train import train
from precog.services.model_control import publish_roles, read_roles

from precog.io.elasticsearch import elasticsearch_client
from precog.registry import ModelRegistry
from precog.roles import ModelRef, set_leader
from precog.settings import Settings
from precog.simulate import SimConfig, produce_live, write_history
from precog.spec import SPEC_DIR, load_spec
from precog.workers import metric_total
from tests.e2e.helpers import decode_all, read_topic, running_worker

pytestmark = pytest.mark.e2e


def _trained(settings: Settings, tmp_path: Path, events: int = 12_000, seed: int = 1) -> Any:
    spec = load_spec(settings.spec)
    write_history(tmp_path / "history", events, seed=seed, progress=False,
                  spec=spec)
    metas = train(settings, spec, tmp_path / "history")
    return spec, {m.model_id: m for m in metas}


def _es(settings: Settings) -> Elasticsearch:
    return elasticsearch_client(settings)


def _wait_for_documents(es: Elasticsearch, index: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        es.indices.refresh(index=index)
        count = int(es.count(index=index)["count"])
        if count >= expected:
            time.sleep(1.0)  # a late duplicate would show up now
            es.indices.refresh(index=index)
            return int(es.count(index=index)["count"])
        time.sleep(0.5)
    return count


def test_every_event_ends_as_one_prediction_or_one_dead_letter(settings, tmp_path):
    spec, metas = _trained(settings, tmp_path)
    with running_worker(settings, tmp_path) as worker:
        summary = produce_live(settings, spec, 400, 300.0, SimConfig(seed=3, garbage_fraction=0.06),
                               progress=False, outcome_wait_s=0)
        bad = sum(summary.garbage.values())
        assert summary.sent == 400 and bad > 0 and summary.valid == 400 - bad

        events = read_topic(settings, settings.topic(spec.event.topic), 400, settle=0.5)
        predictions = decode_all(read_topic(settings, settings.topic("predictions"), summary.valid),
                                 "prediction")
        dead = read_topic(settings, settings.topic("dlq"), bad)
        docs = _wait_for_documents(_es(settings), settings.index("predictions"),
                                   2 * summary.valid)
        metrics = worker.metrics()

    # exactly one prediction per valid event, none for garbage
    from precog.avro import Codec
    from precog.errors import EventError
    from precog.validation import check_event

    codec, valid_ids = Codec.for_schema("transaction"), set()
    for m in events:
        try:
            rec = codec.decode(m.value())
        except EventError:
            continue
        if not check_event(spec, rec, int(time.time() * 1000)):
            valid_ids.add(rec["event_id"])
    ids = [p["event_id"] for p in predictions]
    assert len(ids) == len(set(ids)) == summary.valid
    assert set(ids) == valid_ids
    # every bad record in the DLQ with its reason; the counts reconcile exactly
    assert len(dead) == bad
    assert len(events) == len(predictions) + len(dead)
    for m in dead:
        headers = dict(m.headers())
        assert headers["precog.source_topic"] == settings.topic(spec.event.topic).encode()
        assert headers["precog.error_class"] in (b"DecodeError", b"ValidationError")
        assert headers["precog.error_message"]
        assert int(headers["precog.offset"]) >= 0
    # one Elasticsearch document per (event, model)
    assert docs == 2 * summary.valid
    # provenance on every prediction; the leader and the challenger both scored
    p = predictions[0]
    assert p["leader"]["model_id"] == "fraud-lgbm" and p["leader"]["role"] == "leader"
    assert [c["model_id"] for c in p["challengers"]] == ["fraud-logreg"]
    assert p["leader"]["artifact_sha256"] == metas["fraud-lgbm"].artifact_sha256
    assert [f["name"] for f in p["features"]] == spec.feature_names
    assert p["provenance"]["event_schema"] == "precog.events.Transaction/v1"
    # the worker's own counters agree
    assert metric_total(metrics, "precog_predictions_out_total") == summary.valid
    assert metric_total(metrics, "precog_dead_letters_total") == bad
    assert metric_total(metrics, "precog_events_in_total") == 400
    # every score batch timed stage by stage: one sample per stage per batch, and the
    # stages lie within the batch's own time
    batches = _score_samples(metrics, "precog_batch_seconds_count")
    assert batches[()] >= 1
    counts = _score_samples(metrics, "precog_batch_stage_seconds_count")
    assert set(counts) == {("decode",), ("state_read",), ("featurize",), ("predict_encode",),
                           ("publish",), ("state_write",)}
    assert set(counts.values()) == {batches[()]}
    stages = sum(_score_samples(metrics, "precog_batch_stage_seconds_sum").values())
    assert 0 < stages <= _score_samples(metrics, "precog_batch_seconds_sum")[()]


def _score_samples(text: str, name: str) -> dict[tuple[str, ...], float]:
    """The score agent's samples of ``name`` in ``/metrics`` text, by stage (if any)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {tuple(v for k, v in s.labels.items() if k == "stage"): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and s.labels.get("agent") == "score"}


def _a_quarter_scored(settings: Settings, n: int, producer: threading.Thread) -> None:
    """Return once a quarter of a stream of ``n`` events is scored, the stream still going.

    Seen on the predictions topic, not guessed from a sleep: a slow start must not let the
    whole stream pass before a mid-stream change. At 250 events/s the other three quarters
    still take ~4 s, time enough for the worker to apply the change.
    """
    scored = read_topic(settings, settings.topic("predictions"), n // 4, timeout=60, settle=0)
    assert len(scored) >= n // 4, "the worker did not start scoring"
    assert producer.is_alive(), "the stream ended before the change"


def test_switching_the_leader_mid_stream_loses_nothing_and_never_mixes(settings, tmp_path):
    spec, metas = _trained(settings, tmp_path)
    n = 1500
    with running_worker(settings, tmp_path):
        result: dict[str, Any] = {}
        producer = threading.Thread(
            target=lambda: result.update(s=produce_live(
                settings, spec, n, 250.0, SimConfig(seed=5), progress=False, outcome_wait_s=0)),
        )
        producer.start()
        _a_quarter_scored(settings, n, producer)
        roles = read_roles(settings, spec.name)
        assert roles is not None
        publish_roles(settings, set_leader(
            roles, ModelRef("fraud-logreg", 1), at=int(time.time() * 1000), by="test",
            reason="switch mid-stream"))
        producer.join(60)
        predictions = read_topic(settings, settings.topic("predictions"), n)

    records = decode_all(predictions, "prediction")
    ids = [r["event_id"] for r in records]
    assert len(ids) == len(set(ids)) == n, "an event was lost or scored twice"
    leaders = {r["leader"]["model_id"] for r in records}
    assert leaders == {"fraud-lgbm", "fraud-logreg"}, "the switch should land mid-stream"
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        prov = r["provenance"]
        by_partition[prov["partition"]].append((prov["offset"], r["leader"]["model_id"]))
        # before: lgbm leads, logreg challenges; after: logreg leads alone (set_leader
        # takes a challenger out of the challengers)
        expected = 2 if r["leader"]["model_id"] == "fraud-lgbm" else 1
        assert len([r["leader"], *r["challengers"]]) == expected
    for rows in by_partition.values():
        order = [leader for _, leader in sorted(rows)]
        switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
        assert switches <= 1 and order[0] == "fraud-lgbm", "leaders must not flip back"


def test_a_tampered_artifact_is_refused_and_the_worker_keeps_scoring(settings, tmp_path):
    spec, metas = _trained(settings, tmp_path)
    registry = ModelRegistry(settings.registry_dir)
    artifact = registry.artifact_file(metas["fraud-logreg"])
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    with running_worker(settings, tmp_path) as worker:
        roles = read_roles(settings, spec.name)
        assert roles is not None
        # published directly (the CLI would refuse it): the worker must refuse it too
        publish_roles(settings, set_leader(roles, ModelRef("fraud-logreg", 1),
                                           at=int(time.time() * 1000), by="test"))
        deadline = time.monotonic() + 15
        while "sha256 mismatch" not in worker.log_tail(200) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "sha256 mismatch" in worker.log_tail(200)
        status, body = worker.health()
        summary = produce_live(settings, spec, 50, 200.0, SimConfig(seed=9), progress=False,
                               outcome_wait_s=0)
        records = decode_all(read_topic(settings, settings.topic("predictions"), summary.valid),
                             "prediction")
    # revision 1 named the tampered challenger: it was refused, the leader scores alone;
    # revision 2 would make it leader: refused as a whole, revision 1 stays
    assert status == 200 and body["models"]["revision"] == 1
    assert [m["model_id"] for m in body["models"]["scoring"]] == ["fraud-lgbm"]
    assert {r["leader"]["model_id"] for r in records} == {"fraud-lgbm"}
    assert all(r["challengers"] == [] for r in records)
    assert len(records) == summary.valid


def test_provenance_leads_from_a_prediction_to_its_training_window(settings, tmp_path):
    settings = settings.model_copy(update={"code_version": "e2e-provenance-1"})
    spec, metas = _trained(settings, tmp_path)
    with running_worker(settings, tmp_path):
        summary = produce_live(settings, spec, 30, 100.0, SimConfig(seed=11), progress=False,
                               outcome_wait_s=0)
        record = decode_all(read_topic(settings, settings.topic("predictions"), summary.valid),
                            "prediction")[0]
    leader = record["leader"]
    meta = ModelRegistry(settings.registry_dir).get(leader["model_id"], leader["version"])
    assert meta.artifact_sha256 == leader["artifact_sha256"]
    assert meta.training_window_start < meta.training_window_end < record["event_time"]
    es = _es(settings)
    doc = es.get(index=settings.index("models"), id=f"{leader['model_id']}:{leader['version']}")
    assert doc["_source"]["artifact_sha256"] == leader["artifact_sha256"]
    assert doc["_source"]["training_window_end"] == meta.training_window_end
    assert record["provenance"]["code_version"] == meta.code_version == "e2e-provenance-1"


def test_a_second_domain_needs_only_a_spec_and_a_schema(stack, tmp_path):
    from precog.namespace import drop_namespace, setup_namespace
    from tests.conftest import unique_namespace

    s = Settings(namespace=unique_namespace(), spec=SPEC_DIR / "sensors.yaml",
                 registry_dir=tmp_path / "registry")
    spec = load_spec(s.spec)
    setup_namespace(s, spec)
    try:
        spec, metas = _trained(s, tmp_path, events=8000, seed=2)
        with running_worker(s, tmp_path):
            summary = produce_live(s, spec, 200, 200.0,
                                   SimConfig(seed=4, garbage_fraction=0.05),
                                   progress=False, outcome_wait_s=0)
            records = decode_all(read_topic(s, s.topic("predictions"), summary.valid),
                                 "prediction")
            dead = read_topic(s, s.topic("dlq"), sum(summary.garbage.values()))
        assert len({r["event_id"] for r in records}) == len(records) == summary.valid
        assert len(dead) == sum(summary.garbage.values())
        assert records[0]["source"] == "sensors"
        assert [f["name"] for f in records[0]["features"]] == spec.feature_names
        assert records[0]["provenance"]["event_schema"].endswith("/v1")
    finally:
        drop_namespace(s)


def test_a_canary_split_in_the_worker_follows_each_entitys_bucket_through_a_step(
        settings, tmp_path):
    from precog.roles import canary, set_traffic
    from precog.traffic import bucket

    spec, _ = _trained(settings, tmp_path)
    lgbm, logreg = ModelRef("fraud-lgbm", 1), ModelRef("fraud-logreg", 1)
    roles = read_roles(settings, spec.name)
    at = int(time.time() * 1000)
    at40 = set_traffic(roles, canary(lgbm, logreg, 4000, since=at), at=at, by="test")
    publish_roles(settings, at40)
    n = 1500
    with running_worker(settings, tmp_path):
        result: dict[str, Any] = {}
        producer = threading.Thread(
            target=lambda: result.update(s=produce_live(
                settings, spec, n, 250.0, SimConfig(seed=6), progress=False, outcome_wait_s=0)),
        )
        producer.start()
        _a_quarter_scored(settings, n, producer)  # step the canary up to 80%
        at = int(time.time() * 1000)
        publish_roles(settings, set_traffic(at40, canary(lgbm, logreg, 8000, since=at),
                                            at=at, by="test"))
        producer.join(60)
        predictions = read_topic(settings, settings.topic("predictions"), n)

    records = decode_all(predictions, "prediction")
    assert len({r["event_id"] for r in records}) == n
    weights = set()
    for r in records:
        served, b = r["served"], bucket(r["entity_id"], spec.traffic.salt)
        assert served["policy"] == "canary" and served["bucket"] == b
        if b < 4000:  # in the canary at both weights
            assert served["arm"] == "canary"
        elif b >= 8000:  # in the canary at neither
            assert served["arm"] == "leader"
        else:
            weights.add(served["arm"])  # leader before the step, canary after
        decider = r["challengers"][0] if served["arm"] == "canary" else r["leader"]
        assert served["decided_by"] == {"model_id": decider["model_id"],
                                        "version": decider["version"]}
        assert (served["score"], served["label"]) == (decider["score"], decider["label"])
    assert weights == {"leader", "canary"}, "the step should land mid-stream"
