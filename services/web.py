"""``/health`` and ``/metrics`` on the worker's Faust web server."""

from __future__ import annotations

import time
from typing import Any

from precog.services.runtime import Runtime
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def health(rt: Runtime) -> tuple[int, dict[str, Any]]:
    """Status code and body: 200 when models are loaded and nothing is being waited for.

    503 while models are missing, while a dependency is unavailable or a condition such
    as lost feature state holds (``waiting_for`` names each one with its address), and
    while the worker stops after an unexpected error (``error``).
    """
    models = rt.models
    body: dict[str, Any] = {
        "namespace": rt.settings.namespace,
        "spec": rt.spec.name,
        "worker": rt.worker_name,
        "code_version": rt.code_version,
        "models": None,
        "last_batch_age_s": None,
    }
    if models is not None:
        body["models"] = {
            "revision": models.revision,
            "scoring": [
                {
                    "model_id": m.model.model_id,
                    "version": m.model.version,
                    "role": m.role,
                    "artifact_sha256": m.model.artifact_sha256,
                }
                for m in models.all
            ],
        }
    if rt.last_batch_time is not None:
        body["last_batch_age_s"] = round(time.time() - rt.last_batch_time, 3)
    body["agents"] = list(rt.agents)
    problems = rt.health.problems()
    body["waiting_for"] = problems
    if rt.health.fatal is not None:
        body["status"], code = "stopping", 503
        body["error"] = rt.health.fatal
    elif models is None and "score" in rt.agents:
        body["status"], code = "waiting-for-models", 503
    elif problems:
        body["status"], code = "degraded", 503
    else:
        body["status"], code = "ok", 200
    return code, body


def register(rt: Runtime) -> None:
    app = rt.app

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        status, body = health(rt)
        return web.json(body, status=status)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format is ASCII.
        content_type = CONTENT_TYPE_LATEST.split("; charset")[0]
        return web.bytes(generate_latest(rt.metrics.registry), content_type=content_type)
