"""`precog serve` on the real stack: uvicorn on 127.0.0.1, Redis state, Kafka, trained models.

One namespace for the module (trained once, roles published by `train`); every test uses
its own entity and event ids. The server runs in a thread on a free port, as `precog serve`
runs it (the same app, uvicorn, the role watcher following model-control).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from precog.services.agents.score import ensure_state_marker, score_events
from precog.services.feature_store import RedisOnlineStore
from precog.services.runtime import now_ms

from precog.avro import Codec
from precog.features import EntityState, Featurizer
from precog.io.redis import redis_client
from precog.registry import ModelRegistry
from precog.scoring import prediction_id
from precog.serve.app import create_app
from precog.serve.server import tls_options
from precog.settings import Settings
from precog.spec import PipelineSpec, load_spec
from precog.validation import check_event, failure_reason
from precog.workers import free_port
from tests.conftest import ROOT, unique_namespace
from tests.e2e.helpers import read_topic
from tests.unit.memory import RecordingProducer, event

pytestmark = pytest.mark.integration

KEY = "test-key-" + uuid.uuid4().hex[:8]
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def served(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A namespace with trained, registered models and published roles."""
    from precog.pipelines.train import train

    from precog.namespace import drop_namespace, setup_namespace
    from precog.simulate import write_history

    base = Settings()
    spec_path = base.spec if base.spec.is_absolute() else ROOT / base.spec
    tmp = tmp_path_factory.mktemp("serve")
    s = Settings(namespace=unique_namespace(), spec=spec_path, registry_dir=tmp / "registry",
                 serve={"api_keys": KEY, "timeout": 3.0})
    spec = load_spec(spec_path)
    setup_namespace(s, spec)
    write_history(tmp / "history", 4000, seed=7, end_ms=1_760_000_000_000, progress=False,
                  spec=spec)
    train(s, spec, tmp / "history", seed=3, index=False)
    yield s
    try:
        drop_namespace(s)
    except Exception as exc:
        warnings.warn(f"cleanup of namespace {s.namespace} failed: {exc}", stacklevel=1)


@pytest.fixture(scope="module")
def spec(served: Settings) -> PipelineSpec:
    return load_spec(served.spec)


@contextmanager
def serving(settings: Settings, ready: bool = True, apps: list[Any] | None = None
            ) -> Iterator[str]:
    """`precog serve`'s app on uvicorn in a thread; yields its base URL (``apps`` gets the app)."""
    port = free_port()
    app = create_app(settings, load_spec(settings.spec), "test")
    if apps is not None:
        apps.append(app)
    tls = tls_options(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           loop="asyncio", **tls))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: Any = (ssl.create_default_context(cafile=str(settings.serve.tls_certfile))
                   if tls else True)
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        if ready:  # the role watcher loaded the models
            while httpx.get(f"{url}/v2/health/ready", verify=verify).status_code != 200:
                assert time.monotonic() < deadline, "models not loaded"
                time.sleep(0.2)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def url(served: Settings) -> Iterator[str]:
    with serving(served) as base:
        yield base


def _event(entity: str, n: int, t: int, **over: Any) -> dict[str, Any]:
    return {"event_id": f"{entity}-e{n}", "card_id": entity, "customer_id": "cust-1",
            "merchant_id": f"m{n % 3}", "category": "grocery", "amount": 12.5 + 10 * n,
            "currency": "EUR", "country": "DE" if n % 2 else "FR", "channel": "pos",
            "event_time": t, **over}


def _state(settings: Settings, spec: PipelineSpec, entity: str) -> bytes | None:
    with redis_client(settings) as r:
        return r.get(settings.redis_key("state", spec.name, entity))


def _entity() -> str:
    return f"card-{uuid.uuid4().int % 10**12}"


def _post(url: str, body: Any, path: str = "/v1/score", **kw: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=kw.pop("headers", AUTH), timeout=30, **kw)


def test_v1_scores_with_the_stream_features_models_and_publishes_channel_rest(
        served, spec, url):
    entity, t0 = _entity(), now_ms() - 3_600_000
    events = [_event(entity, 1, t0), _event(entity, 2, t0 + 600_000)]
    first = _post(url, events[0])
    assert first.status_code == 200, first.text
    second = _post(url, [events[1]])
    assert second.status_code == 200, second.text
    answers = [first.json(), second.json()[0]]

    # the stream's featurizer over the same two events gives the same feature values
    fz = Featurizer(spec)
    vec1, st1 = fz.featurize(None, events[0])
    vec2, _ = fz.featurize(st1, events[1])
    registry = ModelRegistry(served.registry_dir)
    for answer, ev, vec in zip(answers, events, (vec1, vec2), strict=True):
        pred = answer["prediction"]
        assert answer["event_id"] == ev["event_id"] and answer["replayed"] is False
        assert answer["prediction_id"] == prediction_id(spec.name, ev["event_id"])
        assert answer["state"] == "updated"
        assert [f["name"] for f in pred["features"]] == fz.names
        assert [f["value"] for f in pred["features"]] == vec.values
        assert [f["age_ms"] for f in pred["features"]] == vec.ages_ms
        assert pred["provenance"]["channel"] == "rest"
        assert pred["provenance"]["partition"] == -1 and pred["provenance"]["offset"] == -1
        assert pred["provenance"]["spec"] == spec.name
        assert pred["provenance"]["prediction_schema"] == "precog.predictions.Prediction/v3"
        models = [pred["leader"], *pred["challengers"]]
        assert {m["model_id"] for m in models} == {"fraud-lgbm", "fraud-logreg"}
        # every model's score is the registered artifact's, on the spec's features
        for m in models:
            loaded = registry.load(m["model_id"], m["version"])
            cols = [fz.names.index(f) for f in loaded.features]
            x = np.array([[vec.values[c] for c in cols]])
            assert m["score"] == float(loaded.predict_proba(x)[0])
            assert m["artifact_sha256"] == loaded.artifact_sha256
        # shadow: the leader's decision is served
        assert answer["decision"] == {"label": pred["leader"]["label"],
                                      "score": pred["leader"]["score"],
                                      "model_id": pred["leader"]["model_id"],
                                      "version": pred["leader"]["version"],
                                      "policy": "shadow", "arm": "leader"}

    # both predictions are on {ns}.predictions, decodable with schemas/prediction.v3.avsc
    msgs = [m for m in read_topic(served, served.topic("predictions"), 2, timeout=30, settle=1)
            if m.key().decode() in {e["event_id"] for e in events}]
    codec = Codec.for_schema("prediction")
    assert codec.writer.label == "precog.predictions.Prediction/v3"
    decoded = {codec.decode(m.value())["event_id"]: codec.decode(m.value()) for m in msgs}
    assert len(msgs) == 2
    for answer in answers:
        assert decoded[answer["event_id"]] == answer["prediction"]
        assert decoded[answer["event_id"]]["provenance"]["channel"] == "rest"


def test_v2_metadata_and_infer_with_one_tensor_per_field(served, spec, url):
    meta = httpx.get(f"{url}/v2/models/{spec.name}", headers=AUTH)
    assert meta.status_code == 200
    raw = Codec.for_schema(spec.event.schema_name).writer.raw
    assert [i["name"] for i in meta.json()["inputs"]] == [f["name"] for f in raw["fields"]]
    assert {i["name"]: i["datatype"] for i in meta.json()["inputs"]}["amount"] == "FP64"
    assert httpx.get(f"{url}/v2/models/nope", headers=AUTH).status_code == 404
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}

    entity, t0 = _entity(), now_ms() - 60_000
    events = [_event(entity, 1, t0), _event(entity, 2, t0 + 1000)]
    inputs = [{"name": name, "datatype": "BYTES" if isinstance(events[0][name], str) else "FP64",
               "shape": [2], "data": [e[name] for e in events]} for name in events[0]]
    r = _post(url, {"id": "req-1", "inputs": inputs}, f"/v2/models/{spec.name}/infer")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == spec.name and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["prediction_id"]["data"] == [prediction_id(spec.name, e["event_id"])
                                            for e in events]
    assert out["label"]["shape"] == [2] and out["score"]["datatype"] == "FP64"
    assert out["features"]["shape"] == [2, len(spec.feature_names)]
    # the same event through /v1/score is a repeat: the first (V2) answer's scores
    again = _post(url, events[1]).json()
    assert again["replayed"] is True
    assert again["prediction"]["leader"]["score"] == out["score"]["data"][1]
    assert [f["value"] for f in again["prediction"]["features"]] == \
        out["features"]["data"][len(spec.feature_names):]


def test_invalid_events_answer_422_with_the_dlq_reasons_and_score_nothing(served, spec, url):
    entity, now = _entity(), now_ms()
    bad = _event(entity, 1, now - 1000, amount=-5.0)
    missing = {k: v for k, v in _event(entity, 2, now - 500).items() if k != "card_id"}
    good = _event(entity, 3, now - 100)
    r = _post(url, [good, bad, missing])
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "2 invalid event(s): nothing was scored"
    reasons = {x["index"]: (x["stage"], x["reason"]) for x in body["rejected"]}
    # the DLQ's reason is failure_reason(check_batch(...)) of the decoded record
    decoded_bad = Codec.for_schema(spec.event.schema_name).decode(
        Codec.for_schema(spec.event.schema_name).encode(bad))
    assert reasons[1] == ("validate", failure_reason(check_event(spec, decoded_bad, now)))
    assert reasons[2] == ("validate", failure_reason(check_event(spec, missing, now)))
    assert "card_id" in reasons[2][1]
    assert set(reasons) == {1, 2}
    assert _state(served, spec, entity) is None  # nothing scored, no state
    # V2: the same reasons
    inputs = [{"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP64", "shape": [1],
               "data": [v]} for k, v in bad.items()]
    r2 = _post(url, {"inputs": inputs}, f"/v2/models/{spec.name}/infer")
    assert r2.status_code == 422 and r2.json()["rejected"][0]["reason"] == reasons[1][1]
    bad_tensor = _post(url, {"inputs": [{"name": "amount", "datatype": "FP64", "shape": [2],
                                         "data": [1.0]}]}, f"/v2/models/{spec.name}/infer")
    assert bad_tensor.status_code == 422
    assert bad_tensor.json()["error"] == "inputs: 'amount' has shape [2] but 1 values"


def test_a_repeated_event_gets_its_first_answer_and_moves_the_state_once(served, spec, url):
    entity, t0 = _entity(), now_ms() - 10_000
    ev = _event(entity, 1, t0)
    first = _post(url, ev).json()
    state = _state(served, spec, entity)
    assert state is not None and EntityState.from_bytes(state).direct == [ev["event_id"]]
    again = _post(url, ev)
    assert again.headers["Precog-Replayed"] == "1"
    assert {**again.json(), "replayed": False} == first and again.json()["replayed"] is True
    assert _state(served, spec, entity) == state
    # the same event twice in one request: scored once
    ev2 = _event(entity, 2, t0 + 1000)
    both = _post(url, [ev2, ev2]).json()
    assert [a["replayed"] for a in both] == [False, True]
    assert both[0]["prediction"] == both[1]["prediction"]
    state2 = _state(served, spec, entity)
    assert EntityState.from_bytes(state2).direct == [ev["event_id"], ev2["event_id"]]
    # the answer expired (TTL): the state still knows the event and does not move again
    with redis_client(served) as r:
        assert r.delete(f"{served.namespace}:serve-answer:{spec.name}:rw:{ev['event_id']}") == 1
    late = _post(url, ev).json()
    assert late["state"] == "already-applied" and late["replayed"] is False
    assert late["prediction_id"] == first["prediction_id"]
    assert _state(served, spec, entity) == state2

    # the same event arriving later on the events topic: the score agent does not apply it
    async def stream() -> None:
        from precog.services.runtime import Runtime

        rt = Runtime(settings=served, spec=spec, app=None, code_version="test")
        rt.models = _models(served, spec)
        codec = Codec.for_schema(spec.event.schema_name)
        topic = served.topic(spec.event.topic)
        msgs = [event(topic, 0, 7, codec.encode(ev), entity.encode())]
        store_ = RedisOnlineStore(served, spec)
        try:
            assert await score_events(rt, store_, RecordingProducer(), Featurizer(spec), msgs) == 1
        finally:
            await store_.close()

    asyncio.run(stream())
    assert _state(served, spec, entity) == state2


def _models(settings: Settings, spec: PipelineSpec) -> Any:
    from precog.services.agents.role_watcher import model_set_from_roles
    from precog.services.model_control import read_roles

    roles = read_roles(settings, spec.name)
    assert roles is not None
    return model_set_from_roles(ModelRegistry(settings.registry_dir), roles.to_record(),
                                Featurizer(spec).names)


def test_read_only_scores_without_touching_the_state(served, spec, url):
    entity, t0 = _entity(), now_ms() - 5000
    r = _post(url, _event(entity, 1, t0), params={"read_only": "true"})
    assert r.status_code == 200 and r.json()["state"] == "read-only"
    assert _state(served, spec, entity) is None
    # an update of the same event afterwards is not the read-only answer: it moves the state
    r2 = _post(url, _event(entity, 1, t0))
    assert r2.json()["state"] == "updated" and r2.json()["replayed"] is False
    assert _state(served, spec, entity) is not None


def test_requests_without_a_valid_key_are_refused(served, spec, url):
    ev = _event(_entity(), 1, now_ms())
    none = _post(url, ev, headers={})
    assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer"
    assert none.json() == {"error": "no API key: send X-API-Key or Authorization: Bearer"}
    wrong = _post(url, ev, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "the API key is not valid"
    assert httpx.get(f"{url}/v2/models/{spec.name}").status_code == 401
    bearer = _post(url, ev, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # probes need no key


def test_metrics_and_openapi_from_the_avro_schema(served, spec, url):
    _post(url, _event(_entity(), 1, now_ms()), headers={})
    text = httpx.get(f"{url}/metrics").text
    assert 'precog_http_request_seconds_count{method="POST",route="/v1/score",status="401"}' \
        in text
    assert 'route="/v2/health/ready",status="200"' in text
    assert "precog_roles_revision" in text
    doc = httpx.get(f"{url}/openapi.json").json()
    event_schema = doc["components"]["schemas"]["Event"]
    raw = Codec.for_schema(spec.event.schema_name).writer.raw
    assert list(event_schema["properties"]) == [f["name"] for f in raw["fields"]]
    assert event_schema["properties"]["amount"]["type"] == "number"
    assert "currency" not in event_schema["required"]  # it has a default
    body = doc["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][0] == {"$ref": "#/components/schemas/Event"}


def test_redis_down_answers_503_naming_it_and_its_address(served, spec, tmp_path: Path):
    closed = free_port()
    down = served.model_copy(update={"redis": served.redis.model_copy(
        update={"url": f"redis://127.0.0.1:{closed}/0"})})
    with serving(down, ready=False) as base:
        deadline = time.monotonic() + 60
        while True:  # the models load (Kafka is up); Redis is what is missing
            ready = httpx.get(f"{base}/v2/health/ready")
            if "model-control" not in ready.json().get("waiting_for", {}):
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ready.status_code == 503 and "redis" in ready.json()["waiting_for"]
        r = _post(base, _event(_entity(), 1, now_ms()))
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["dependency"] == "redis"
        assert body["address"] == f"redis://127.0.0.1:{closed}/0"
        assert body["error"].startswith(f"redis is not reachable at redis://127.0.0.1:{closed}/0")


def test_tls_from_the_settings_serves_https_only(served, tmp_path: Path):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    secure = served.model_copy(update={"serve": served.serve.model_copy(
        update={"tls_certfile": cert, "tls_keyfile": key})})
    with serving(secure) as base:
        assert base.startswith("https://")
        r = httpx.post(f"{base}/v1/score", json=_event(_entity(), 1, now_ms()), headers=AUTH,
                       verify=ssl.create_default_context(cafile=str(cert)), timeout=30)
        assert r.status_code == 200 and r.json()["state"] == "updated"
        with pytest.raises(httpx.HTTPError):
            httpx.get(base.replace("https://", "http://") + "/v2/health/live", timeout=5)


def test_kafka_not_acknowledging_answers_503_naming_it_and_nothing_moves(served, spec):
    from types import SimpleNamespace

    from precog.services.batch_producer import BatchProducer

    apps: list[Any] = []
    with serving(served, apps=apps) as base:
        service = apps[0].state.service
        closed = free_port()
        down = served.model_copy(update={"kafka": served.kafka.model_copy(
            update={"bootstrap": f"127.0.0.1:{closed}"})})
        # the scorer's producer, as a process whose broker went away would have it
        real, service.scorer.producer = service.scorer.producer, BatchProducer(
            SimpleNamespace(settings=down, worker_name="test", health=service.rt.health),
            1_000_000)
        try:
            entity = _entity()
            r = _post(base, _event(entity, 1, now_ms()))
            assert r.status_code == 503, r.text
            assert r.json()["dependency"] == "kafka"
            assert r.json()["address"] == f"127.0.0.1:{closed}"
            assert r.json()["error"] == (f"kafka is not reachable at 127.0.0.1:{closed}:"
                                         " no answer within 3s")
            assert _state(served, spec, entity) is None  # published first, then the state
        finally:
            service.scorer.producer = real


def test_roles_are_hot_reloaded_from_model_control(served, spec, url):
    from precog.services.model_control import publish_roles, read_roles

    from precog.roles import ModelRef, set_leader

    roles = read_roles(served, spec.name)
    assert roles is not None and roles.leader.model_id == "fraud-lgbm"
    before = httpx.get(f"{url}/v2/models/{spec.name}", headers=AUTH).json()["parameters"]
    publish_roles(served, set_leader(roles, ModelRef("fraud-logreg", 1), at=now_ms(), by="test"))
    deadline = time.monotonic() + 30
    while True:
        meta = httpx.get(f"{url}/v2/models/{spec.name}", headers=AUTH).json()["parameters"]
        if meta["roles_revision"] > before["roles_revision"]:
            break
        assert time.monotonic() < deadline, "roles not reloaded"
        time.sleep(0.2)
    assert [(m["model_id"], m["role"]) for m in meta["models"]] == [("fraud-logreg", "leader")]
    answer = _post(url, _event(_entity(), 1, now_ms())).json()
    assert answer["decision"]["model_id"] == "fraud-logreg"
    assert answer["prediction"]["challengers"] == []


def test_rest_and_the_stream_give_bit_identical_features_and_scores(served, spec, url):
    """The same event sequence of one card through the score agent and through `/v1/score`
    (its own card, so the two states do not mix): features, ages and every score equal."""
    t0 = now_ms() - 7_200_000
    stream_card, rest_card = _entity(), _entity()
    seq = [(n, t0 + n * 90_000 + (n % 3) * 7_000) for n in range(12)]
    stream_events = [_event(stream_card, n, t) for n, t in seq]
    rest_events = [_event(rest_card, n, t) for n, t in seq]

    async def stream() -> list[dict[str, Any]]:
        from precog.services.runtime import Runtime

        rt = Runtime(settings=served, spec=spec, app=None, code_version="test")
        rt.models = _models(served, spec)
        codec = Codec.for_schema(spec.event.schema_name)
        topic = served.topic(spec.event.topic)
        producer = RecordingProducer()
        store = RedisOnlineStore(served, spec)
        try:  # two micro-batches: the state chains through Redis between them
            await ensure_state_marker(rt, store)  # what the worker's first batch does
            for lo, hi in ((0, 5), (5, 12)):
                msgs = [event(topic, 1, 100 + i, codec.encode(stream_events[i]),
                              stream_card.encode()) for i in range(lo, hi)]
                assert await score_events(rt, store, producer, Featurizer(spec), msgs) == hi - lo
        finally:
            await store.close()
        pcodec = Codec.for_schema("prediction")
        return [pcodec.decode(s.value) for s in producer.on(served.topic("predictions"))]

    # the roles may have changed in an earlier test: the stream reads them as serve does
    streamed = asyncio.run(stream())
    served_ = [_post(url, e).json()["prediction"] for e in rest_events]
    assert len(streamed) == len(served_) == 12
    for s, r in zip(streamed, served_, strict=True):
        assert s["provenance"]["channel"] == "stream" and r["provenance"]["channel"] == "rest"
        assert repr(s["features"]) == repr(r["features"])  # bit for bit (repr: NaN-safe)
        assert repr([s["leader"], *s["challengers"]]) == repr([r["leader"], *r["challengers"]])
