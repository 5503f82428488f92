"""A bounded load client for V2/REST servers: latency percentiles and rate, closed or open loop.

``closed_loop`` sends ``n`` requests from ``concurrency`` clients (the saturation rate);
``at_rate`` sends requests on a fixed schedule (open loop) and measures each latency from
its scheduled time, so a server that falls behind shows it in the percentiles instead of
slowing the client down (coordinated omission). The ``mlserver`` section of ``precog
bench`` (precog/bench/mlserver.py) drives both against ``precog serve`` and MLServer. By
hand, against a running ``precog serve``, 127.0.0.1 only, with small counts::

    python -m precog.bench.serve_load --history data/h --key k1 -n 300 -c 1

Events come from a history directory (``events.avro``, any domain): each request sends one
of them with a fresh event id and the current time, so every request is a new event that
is featurized, scored, published and written (no idempotent replay). ``--v2`` sends them to
``/v2/models/{spec}/infer`` as one tensor per field instead of ``/v1/score``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from precog.history import read_history
from precog.settings import Settings
from precog.spec import PipelineSpec, load_spec


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values.

    >>> _percentile([1.0, 2.0, 3.0, 4.0], 0.5), _percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    k = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def _v2(event: dict[str, Any]) -> dict[str, Any]:
    def kind(v: Any) -> str:
        return "BYTES" if isinstance(v, str) else "INT64" if isinstance(v, int) else "FP64"
    return {"inputs": [{"name": k, "datatype": kind(v), "shape": [1], "data": [v]}
                       for k, v in event.items()]}


Body = Callable[[int], Any]


def _latencies(latencies: list[float], elapsed: float) -> dict[str, float]:
    latencies.sort()
    return {"requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * _percentile(latencies, 0.5),
            "p99_ms": 1000 * _percentile(latencies, 0.99)}


async def _send(c: Any, path: str, body: Any) -> None:
    r = await c.post(path, content=orjson.dumps(body),
                     headers={"Content-Type": "application/json"})
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")


async def closed_loop(url: str, headers: dict[str, str], path: str, body: Body, n: int,
                      concurrency: int) -> dict[str, float]:
    """``n`` requests (``body(i)``) from ``concurrency`` clients, each waiting for its
    answer before the next: rate and latency (ms) percentiles."""
    import httpx

    latencies: list[float] = []
    todo = list(range(n))

    async def client(c: httpx.AsyncClient) -> None:
        while todo:
            i = todo.pop()
            started = time.perf_counter()
            await _send(c, path, body(i))
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as c:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {**_latencies(latencies, elapsed), "concurrency": concurrency}


async def at_rate(url: str, headers: dict[str, str], path: str, body: Body, rate: float,
                  seconds: float, max_in_flight: int = 64) -> dict[str, float]:
    """Requests at ``rate`` per second for ``seconds`` (open loop, at most 5000 and
    ``max_in_flight`` at once); latency from each request's scheduled time."""
    import httpx

    n = min(5000, max(1, int(rate * seconds)))
    latencies: list[float] = []
    gate = asyncio.Semaphore(max_in_flight)
    limits = httpx.Limits(max_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as c:
        start = time.perf_counter()

        async def one(i: int) -> None:
            due = start + i / rate
            async with gate:
                await _send(c, path, body(i))
            latencies.append(time.perf_counter() - due)

        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {**_latencies(latencies, elapsed), "rate": rate}


def event_body(spec: PipelineSpec, events: list[dict[str, Any]], v2: bool) -> Body:
    """Request ``i``: event ``i`` (cycling) with a fresh event id and the current time, as a
    ``/v1/score`` body or a V2 one (one tensor per field)."""
    ev = spec.event
    run_id = uuid.uuid4().hex[:8]

    def body(i: int) -> Any:
        event = {**events[i % len(events)], ev.id_field: f"load-{run_id}-{i}",
                 ev.time_field: int(time.time() * 1000)}
        return _v2(event) if v2 else event
    return body


async def run(url: str, key: str, spec: PipelineSpec, events: list[dict[str, Any]], n: int,
              concurrency: int, v2: bool) -> dict[str, float]:
    """``n`` requests from ``concurrency`` clients; rate and latency (ms) percentiles."""
    path = f"/v2/models/{spec.name}/infer" if v2 else "/v1/score"
    return await closed_loop(url, {"X-API-Key": key}, path, event_body(spec, events, v2), n,
                             concurrency)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--key", required=True, help="one of PRECOG_SERVE_API_KEYS")
    p.add_argument("--history", required=True, help="a history directory (events.avro)")
    p.add_argument("-n", type=int, default=300, help="requests (at most 5000)")
    p.add_argument("-c", type=int, default=1, help="concurrent clients (at most 64)")
    p.add_argument("--v2", action="store_true", help="Open Inference Protocol V2 requests")
    a = p.parse_args()
    if not (1 <= a.n <= 5000 and 1 <= a.c <= 64):
        p.error("-n is 1..5000 and -c 1..64: this is a bounded client")
    spec = load_spec(Settings().spec)
    events, _ = read_history(a.history, spec)
    out = asyncio.run(run(a.url, a.key, spec, events, a.n, a.c, a.v2))
    print(f"{'v2' if a.v2 else 'v1'} n={out['requests']} c={out['concurrency']}:"
          f" {out['requests_per_s']:.0f} req/s, p50 {out['p50_ms']:.1f} ms,"
          f" p99 {out['p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
