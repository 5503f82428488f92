"""The ``precog serve`` ASGI app: Open Inference Protocol V2 and ``/v1/score`` on one scorer.

Routes (docs/serving.md):

* ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``, ``GET /v2/models/{name}``,
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``: KServe/MLServer V2;
  ``{name}`` is the spec's name (the pipeline: its leader and challengers);
* ``POST /v1/score``: one event (a JSON object, the Avro record's JSON form) or a list;
* ``GET /metrics``: Prometheus, with ``precog_http_request_seconds{route,method,status}``.

Health, readiness and metrics are open (probes and scrapers); everything else needs an API
key (:mod:`precog.serve.auth`). Errors have one body shape, ``{"error": "<one line>", ...}``:
422 lists each rejected event with the DLQ's stage and reason, 503 names the dependency and
its address, 401 says what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.datastructures import Headers
from starlette.routing import Match

from precog.errors import ServiceUnavailable
from precog.scoring import DLQ_MESSAGE_LIMIT, served_of
from precog.serve.auth import KeyCheck
from precog.serve.schema import TensorError, events_from_v2, json_schema, v2_inputs
from precog.serve.scoring import Answer, InvalidEvents, ServeScorer
from precog.services.agents.role_watcher import RoleWatcher
from precog.services.batch_producer import BatchProducer
from precog.services.feature_store import RedisOnlineStore, StateLost
from precog.services.runtime import Runtime, now_ms, tune_gc
from precog.settings import Settings
from precog.spec import PipelineSpec

log = logging.getLogger("precog.serve")

#: what the V2 outputs carry per event, besides one score per model
_V2_OUTPUTS = [("label", "INT64"), ("score", "FP64"), ("prediction_id", "BYTES")]


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # orjson: NaN feature values become null instead of an invalid JSON document
    return Response(orjson.dumps(body), status, headers=dict(headers or {}),
                    media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def _unavailable(exc: ServiceUnavailable) -> Response:
    return _error(503, str(exc), dependency=exc.service, address=exc.address)


def _invalid(exc: InvalidEvents) -> Response:
    return _error(422, f"{len(exc.rejected)} invalid event(s): nothing was scored",
                  rejected=[r.to_json() for r in exc.rejected])


@dataclass
class Service:
    """What the app holds while it runs: the runtime, its clients and the scorer."""

    rt: Runtime
    store: RedisOnlineStore
    producer: BatchProducer
    scorer: ServeScorer
    watcher: RoleWatcher

    @classmethod
    def start(cls, settings: Settings, spec: PipelineSpec, code_version: str) -> Service:
        # no Faust app: serve uses the runtime's settings, spec, metrics, health and models,
        # which is all the role watcher, the producer and the score agent's pieces read
        rt = Runtime(settings=settings, spec=spec, app=None,  # type: ignore[arg-type]
                     code_version=code_version)
        store = RedisOnlineStore(settings, spec)
        # no linger: a request's records are all there is to send, and the 0.5 ms the
        # worker waits for its batch to fill cost 1.2 ms per acknowledgement here (p50
        # 1.5 against 0.3 ms for a lone record on the local broker)
        producer = BatchProducer(rt, DLQ_MESSAGE_LIMIT, linger_ms=0)
        scorer = ServeScorer(rt, store, producer, read_only=settings.serve.read_only,
                             answer_ttl=settings.serve.answer_ttl_seconds,
                             timeout=settings.serve.timeout)
        watcher = RoleWatcher(rt, asyncio.get_running_loop())
        watcher.start()
        rt.role_watcher = watcher
        return cls(rt, store, producer, scorer, watcher)

    async def stop(self) -> None:
        self.watcher.stop()
        await self.producer.close()
        await self.store.close()


def create_app(settings: Settings, spec: PipelineSpec, code_version: str) -> FastAPI:
    """The ASGI app; its lifespan starts the role watcher and the clients, and stops them."""
    check = KeyCheck(settings.serve.keys())
    codec_raw = _event_schema(spec)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = Service.start(settings, spec, code_version)
        tune_gc(settings)  # the worker's collector settings: shorter pauses, fewer of them
        try:
            yield
        finally:
            await app.state.service.stop()

    app = FastAPI(title="precog serve", version=code_version, lifespan=lifespan,
                  description="Synchronous scoring with the streaming worker's features and"
                  " models: Open Inference Protocol V2 and native JSON (docs/serving.md).")
    latency = Histogram("precog_http_request_seconds", "HTTP request latency",
                        ["route", "method", "status"],
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                        registry=(http := CollectorRegistry()))
    open_paths = {"/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json", "/docs"}

    def service() -> Service:
        return app.state.service  # type: ignore[no-any-return]

    app.add_middleware(_Guard, check=check, open_paths=open_paths, latency=latency,
                       owner=app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = generate_latest(service().rt.metrics.registry) + generate_latest(http)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return await _readiness(service())

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": "precog", "version": code_version, "extensions": []})

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        if name != spec.name:
            return _error(404, f"unknown model {name!r}: this server serves {spec.name!r}")
        models = service().rt.models
        return _json({
            "name": spec.name, "platform": "precog",
            "versions": [] if models is None else [str(models.leader.model.version)],
            "inputs": v2_inputs(codec_raw),
            "outputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in _V2_OUTPUTS],
            "parameters": {} if models is None else {
                "roles_revision": models.revision,
                "models": [_model_json(m) for m in models.all]},
        })

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        if name != spec.name:
            return _error(404, f"unknown model {name!r}: this server serves {spec.name!r}")
        return await _readiness(service())

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        if name != spec.name:
            return _error(404, f"unknown model {name!r}: this server serves {spec.name!r}")
        body = await _body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return _error(422, "an inference request is a JSON object with inputs")
        try:
            events = events_from_v2(codec_raw, body.get("inputs"))
        except TensorError as exc:
            return _error(422, str(exc))
        params = body.get("parameters") or {}
        read_only = params.get("read_only") if isinstance(params, dict) else None
        result = await _score(service(), settings, events, _flag(read_only))
        if isinstance(result, Response):
            return result
        return _json(_v2_response(spec.name, body.get("id"), result),
                     headers=_replay_header(result))

    @app.post("/v1/score", openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"$ref": "#/components/schemas/Event"},
                      {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                       "maxItems": settings.serve.max_events}]}}}},
        "parameters": [{"name": "read_only", "in": "query", "required": False,
                        "schema": {"type": "boolean"},
                        "description": "score without updating entity state"}],
    })
    async def score(request: Request) -> Response:
        """Score one event (an object) or a list; the answer has the same shape."""
        body = await _body(request)
        if isinstance(body, Response):
            return body
        one = isinstance(body, dict)
        events = [body] if one else body
        if not isinstance(events, list):
            return _error(422, "the body is an event (a JSON object) or a list of events")
        flag = request.query_params.get("read_only")
        result = await _score(service(), settings, events, _flag(flag))
        if isinstance(result, Response):
            return result
        answers = [{**a.body, "replayed": a.replayed} for a in result]
        return _json(answers[0] if one else answers, headers=_replay_header(result))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            event = json_schema(codec_raw)
            event["title"] = "Event"
            doc.setdefault("components", {}).setdefault("schemas", {})["Event"] = event
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app


class _Guard:
    """The API key check and the latency histogram, as plain ASGI middleware.

    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs the app in a task group
    and passes the response through a memory stream: about 0.25 ms per request in
    ``precog serve``'s profile. This wraps ``send`` instead.
    """

    def __init__(self, app: Any, *, check: KeyCheck, open_paths: set[str],
                 latency: Histogram, owner: FastAPI) -> None:
        self.app, self.check, self.open_paths = app, check, open_paths
        self.latency, self.owner = latency, owner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["path"] not in self.open_paths and (
                    reason := self.check(Headers(scope=scope))):
                refused = _error(401, reason)
                refused.headers["WWW-Authenticate"] = "Bearer"
                await refused(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.latency.labels(_route(self.owner, scope), scope["method"],
                                str(status)).observe(time.perf_counter() - started)


def _route(app: FastAPI, scope: Any) -> str:
    """The route template of a request (``/v2/models/{name}/infer``), also of a refused one."""
    route = scope.get("route")
    if route is None:  # refused before routing: find it the way the router would
        route = next((r for r in app.router.routes if r.matches(scope)[0] == Match.FULL), None)
    return str(getattr(route, "path", "unmatched"))


def _event_schema(spec: PipelineSpec) -> dict[str, Any]:
    from precog.avro import Codec

    return Codec.for_schema(spec.event.schema_name).writer.raw


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes")


def _model_json(m: Any) -> dict[str, Any]:
    return {"model_id": m.model.model_id, "version": m.model.version, "role": m.role,
            "threshold": m.model.threshold, "artifact_sha256": m.model.artifact_sha256}


async def _body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"the body is not JSON: {exc}")


async def _score(service: Service, settings: Settings, events: list[Any],
                 read_only: bool | None) -> list[Answer] | Response:
    if not events:
        return _error(422, "no events")
    if len(events) > settings.serve.max_events:
        return _error(413, f"{len(events)} events > PRECOG_SERVE_MAX_EVENTS"
                      f" ({settings.serve.max_events}); score large sets with"
                      " `precog score-batch`")
    try:
        return await service.scorer.score(events, now_ms(), read_only=read_only)
    except InvalidEvents as exc:
        return _invalid(exc)
    except ServiceUnavailable as exc:
        return _unavailable(exc)


async def _readiness(service: Service) -> Response:
    """200 when models are loaded and Redis answers; else 503 saying what is missing."""
    waiting: dict[str, str] = {}
    rt = service.rt
    if rt.models is None:
        waiting["model-control"] = (f"no model roles loaded yet from"
                                    f" {rt.settings.topic('model-control')}")
    try:
        await asyncio.wait_for(service.store.ping(), service.scorer.timeout)
    except StateLost as exc:
        waiting[exc.service] = str(exc)
    except ServiceUnavailable as exc:
        waiting[exc.service] = str(exc)
    except TimeoutError:
        waiting["redis"] = f"redis is not reachable at {service.store.address}: no answer"
    if waiting:
        return _json({"ready": False, "waiting_for": waiting}, 503)
    return _json({"ready": True})


def _replay_header(answers: list[Answer]) -> dict[str, str]:
    return {"Precog-Replayed": ",".join("1" if a.replayed else "0" for a in answers)}


def _v2_response(name: str, request_id: Any, answers: list[Answer]) -> dict[str, Any]:
    """A V2 inference response: the served decision and every model's score as tensors.

    ``label`` and ``score`` are the served decision (the traffic arm's model: the leader
    under shadow); ``policy``, ``arm`` and ``decided_by`` say whose it is.

    The features (values and ages) are ``[n, k]`` tensors; the provenance is in the
    parameters (one JSON string per event, the prediction record's ``provenance``).
    """
    preds = [a.body["prediction"] for a in answers]
    n = len(preds)
    leader = preds[0]["leader"]
    served = [served_of(p) for p in preds]
    outputs: list[dict[str, Any]] = [
        {"name": "label", "datatype": "INT64", "shape": [n],
         "data": [s["label"] for s in served]},
        {"name": "score", "datatype": "FP64", "shape": [n],
         "data": [s["score"] for s in served]},
        {"name": "prediction_id", "datatype": "BYTES", "shape": [n],
         "data": [p["prediction_id"] for p in preds]},
        {"name": "policy", "datatype": "BYTES", "shape": [n],
         "data": [s["policy"] for s in served]},
        {"name": "arm", "datatype": "BYTES", "shape": [n], "data": [s["arm"] for s in served]},
        {"name": "decided_by", "datatype": "BYTES", "shape": [n],
         "data": [f"{s['decided_by']['model_id']}:v{s['decided_by']['version']}"
                  for s in served]},
    ]
    # a repeated event's answer may come from an earlier model set: null where a model
    # did not score that event
    scored = [{(m["model_id"], m["version"]): m for m in (p["leader"], *p["challengers"])}
              for p in preds]
    for key in dict.fromkeys(k for row in scored for k in row):
        first = next(row[key] for row in scored if key in row)
        outputs.append({
            "name": f"score:{key[0]}:v{key[1]}", "datatype": "FP64", "shape": [n],
            "parameters": {"role": first["role"], "artifact_sha256": first["artifact_sha256"]},
            "data": [row[key]["score"] if key in row else None for row in scored]})
    names = [f["name"] for f in preds[0]["features"]]
    outputs.append({"name": "features", "datatype": "FP64", "shape": [n, len(names)],
                    "parameters": {"names": ",".join(names)},
                    "data": [f["value"] for p in preds for f in p["features"]]})
    outputs.append({"name": "feature_ages_ms", "datatype": "INT64", "shape": [n, len(names)],
                    "data": [f["age_ms"] for p in preds for f in p["features"]]})
    outputs.append({"name": "provenance", "datatype": "BYTES", "shape": [n],
                    "data": [orjson.dumps(p["provenance"]).decode() for p in preds]})
    outputs.append({"name": "state", "datatype": "BYTES", "shape": [n],
                    "data": [a.body["state"] for a in answers]})
    response: dict[str, Any] = {"model_name": name, "model_version": str(leader["version"]),
                                "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    return response
