"""``precog serve`` against MLServer serving the same LightGBM model over V2 (the ``mlserver``
section of ``precog bench``, docs/benchmarks.md).

MLServer and its LightGBM runtime pin their own FastAPI, pydantic and uvicorn, so they live
in a virtual environment of their own, ``.venv-mlserver`` in the checkout, which
:func:`ensure_mlserver` creates on first use (or ``python -m precog.bench.mlserver setup``,
or ``scripts/bootstrap --mlserver``). Both servers run as processes on 127.0.0.1 and are
driven by the same bounded client (precog/bench/serve_load.py) with the same V2 request
shape: precog's carries the event (one tensor per field), and ``precog serve`` reads the
entity's state from Redis, featurizes, scores the leader and the challenger, publishes the
prediction and waits for Kafka's acknowledgement, and writes the state and the answer;
MLServer's carries the feature vector the featurizer computed for the same event, and
MLServer runs the leader's booster (the registry's LightGBM text file, loaded by
``mlserver_lightgbm``). What is measured: p50/p99 at fixed request rates (open loop) and the
saturation rate (closed loop, 8 clients).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from precog.bench.io import BenchError, process_env
from precog.bench.serve_load import at_rate, closed_loop, event_body
from precog.settings import Settings
from precog.workers import REPO, free_port, stop_group

#: What the separate environment installs (versions checked against our Python, 3.11).
PACKAGES = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1")
MODEL_NAME = "fraud-lgbm"
SATURATION_CLIENTS = 8


def venv_dir() -> Path:
    return REPO / ".venv-mlserver"


def ensure_mlserver(echo: Callable[[str], None] = print) -> Path:
    """The ``mlserver`` executable of ``.venv-mlserver``, created and installed when missing."""
    venv = venv_dir()
    exe = venv / "bin" / "mlserver"
    stamp = venv / ".precog-packages"
    if exe.exists() and stamp.exists() and stamp.read_text() == " ".join(PACKAGES):
        return exe
    echo(f"installing {' '.join(PACKAGES)} into {venv} (once)")
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", *PACKAGES]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BenchError(f"{' '.join(cmd[:4])}: exit {done.returncode}: {last}")
    stamp.write_text(" ".join(PACKAGES))
    return exe


def model_repository(root: Path, model_file: Path, port: int) -> Path:
    """A MLServer model repository in ``root``: its settings (127.0.0.1, free ports) and the
    leader's booster under :data:`MODEL_NAME`."""
    model_dir = root / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.txt").write_bytes(model_file.read_bytes())
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "mlserver_lightgbm.LightGBMModel",
        "parameters": {"uri": "./model.txt", "version": "v1"}}))
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "debug": False,
        # inference in the server process, as precog serve does it: one process each (and
        # MLServer 1.7.1's inference-pool workers die at start with uvloop 0.22, "There is
        # no current event loop", which pip installs with it today)
        "parallel_workers": 0}))
    return root


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise BenchError(f"{log.name} exited {proc.returncode}: " + " | ".join(tail))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise BenchError(f"{url} not ready after {timeout:.0f}s (log: {log})")


class _Server:
    """A server process on 127.0.0.1 with its log; ``url`` once ``ready``."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, url: str,
                 ready_path: str) -> None:
        self.url, self.log = url, log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_url = url + ready_path

    def ready(self, timeout: float = 180.0) -> _Server:
        _wait_ready(self.proc, self.ready_url, self.log, timeout)
        return self

    def stop(self) -> None:
        stop_group(self.proc)
        self._out.close()


def _feature_body(rows: list[list[float]]) -> Callable[[int], Any]:
    width = len(rows[0])

    def body(i: int) -> Any:
        return {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, width],
                            "data": rows[i % len(rows)]}]}
    return body


def _drive(url: str, headers: dict[str, str], path: str, body: Callable[[int], Any],
           rates: list[float], seconds: float, saturation_n: int) -> dict[str, Any]:
    """Warm-up, each fixed rate, then the saturation run."""
    async def go() -> dict[str, Any]:
        await closed_loop(url, headers, path, body, 30, 1)
        at = [await at_rate(url, headers, path, body, r, seconds) for r in rates]
        sat = await closed_loop(url, headers, path, body, saturation_n, SATURATION_CLIENTS)
        return {"rates": at, "saturation": sat}
    return asyncio.run(go())


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds as medians (with each round's value under ``*_runs``)."""
    def med(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
        values = [r[key] for r in rows]
        return {key: statistics.median(values), f"{key.removesuffix('_ms')}_runs": values}

    rates = []
    for i, first in enumerate(rounds[0]["rates"]):
        rows = [r["rates"][i] for r in rounds]
        rates.append({"rate": first["rate"], "requests": first["requests"],
                      **med(rows, "p50_ms"), **med(rows, "p99_ms")})
    sats = [r["saturation"] for r in rounds]
    return {"rates": rates, "saturation": {
        "requests_per_s": statistics.median(s["requests_per_s"] for s in sats),
        "requests_per_s_runs": [s["requests_per_s"] for s in sats],
        "p50_ms": statistics.median(s["p50_ms"] for s in sats),
        "p99_ms": statistics.median(s["p99_ms"] for s in sats)}}


def bench_mlserver(lab: Any) -> dict[str, Any]:
    """Both servers up at once, driven in turn under the same schedule, ``reps`` rounds
    (the order swapped every round); medians of the rounds and of the per-round ratios
    (docs/benchmarks.md)."""
    from precog.avro import Codec
    from precog.features import Featurizer
    from precog.registry import ModelRegistry

    cfg = lab.config
    exe = ensure_mlserver(lab.echo)
    rates = [20.0, 40.0] if cfg.quick else [25.0, 50.0, 100.0, 200.0]
    seconds = cfg.latency_seconds
    saturation_n = 200 if cfg.quick else 2000
    spec, ev = lab.spec, lab.spec.event
    codec = Codec.for_schema(ev.schema_name)
    events = [codec.decode(v) for _, v, _ in lab.pool[:2000]]
    # MLServer's requests: the features of the same events, from empty states
    vectors, _ = Featurizer(spec).featurize_batch({}, [(e, 0, i) for i, e in enumerate(events)])
    rows = [v.values for v in vectors]
    if not all(math.isfinite(x) for row in rows for x in row):
        raise BenchError("mlserver: a feature value is not finite (JSON cannot carry it)")
    registry = ModelRegistry(lab.template.registry_dir)
    leader = registry.get(lab.leader(), 1)
    if leader.artifact_format != "lightgbm-text":
        raise BenchError(f"mlserver: the leader {leader.ref} is {leader.artifact_format}, "
                         "not a LightGBM text model")
    out: dict[str, Any] = {"rates_per_s": rates, "seconds_per_rate": seconds,
                           "saturation_clients": SATURATION_CLIENTS, "packages": list(PACKAGES),
                           "rounds": cfg.reps}
    logs = lab.logs
    logs.mkdir(parents=True, exist_ok=True)

    s: Settings = lab.namespace(1)
    key = "bench-" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {**process_env(s, free_port(), lab.work / "serve-data"), "PRECOG_SERVE_API_KEYS": key}
    servers: list[_Server] = []
    try:
        serve = _Server([sys.executable, "-m", "precog", "serve", "--port", str(port),
                         "--loglevel", "warning"], env, logs / f"serve-{s.namespace}.log",
                        f"http://127.0.0.1:{port}", "/v2/health/ready")
        servers.append(serve)
        port = free_port()
        repo = model_repository(lab.work / "mlserver-models", registry.artifact_file(leader),
                                port)
        ml = _Server([str(exe), "start", str(repo)],
                     {"PATH": str(exe.parent), "HOME": str(lab.work),
                      # one thread per predict, as precog's models do (precog/models.py):
                      # LightGBM's default, one per core, put the sequential p50 at 21 ms
                      # instead of 2.5 on the shared 2-core machine
                      "OMP_NUM_THREADS": "1"},
                     logs / "mlserver.log", f"http://127.0.0.1:{port}",
                     f"/v2/models/{MODEL_NAME}/ready")
        servers.append(ml)
        serve.ready()
        ml.ready()
        lab.echo("mlserver section: precog serve and MLServer ready")
        drives = {
            "precog": lambda: _drive(serve.url, {"X-API-Key": key},
                                     f"/v2/models/{spec.name}/infer",
                                     event_body(spec, events, v2=True), rates, seconds,
                                     saturation_n),
            "mlserver": lambda: _drive(ml.url, {}, f"/v2/models/{MODEL_NAME}/infer",
                                       _feature_body(rows), rates, seconds, saturation_n)}
        rounds: dict[str, list[dict[str, Any]]] = {"precog": [], "mlserver": []}
        for r in range(cfg.reps):
            order = ["precog", "mlserver"] if r % 2 == 0 else ["mlserver", "precog"]
            for name in order:
                rounds[name].append(drives[name]())
            p99 = [f"{p['p99_ms']:.1f}/{m['p99_ms']:.1f}" for p, m in
                   zip(rounds["precog"][-1]["rates"], rounds["mlserver"][-1]["rates"],
                       strict=True)]
            lab.echo(f"mlserver round {r + 1}: p99 precog/MLServer (ms) {', '.join(p99)}")
    finally:
        for server in servers:
            server.stop()
        lab.drop(s)
    return {**out, **combine_rounds(rounds)}


def combine_rounds(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Both servers' medians, and the medians of the rounds' precog/MLServer ratios (each
    round's pair ran back to back, so its ratio is the like-for-like comparison)."""
    pairs = list(zip(rounds["precog"], rounds["mlserver"], strict=True))
    rates = [row["rate"] for row in rounds["precog"][0]["rates"]]
    return {
        "precog": _medians(rounds["precog"]), "mlserver": _medians(rounds["mlserver"]),
        "p99_ratio": {str(rate): statistics.median(p["rates"][i]["p99_ms"]
                                                   / m["rates"][i]["p99_ms"]
                                                   for p, m in pairs)
                      for i, rate in enumerate(rates)},
        "saturation_ratio": statistics.median(
            p["saturation"]["requests_per_s"] / m["saturation"]["requests_per_s"]
            for p, m in pairs)}


def _spread(row: dict[str, Any], key: str) -> str:
    runs = row.get(f"{key}_runs") or [row[f"{key}_ms"]]
    text = f"{row[f'{key}_ms']:.1f} ms"
    return text if len(runs) < 2 else f"{text} ({min(runs):.1f}-{max(runs):.1f})"


def markdown(ml: dict[str, Any] | None) -> list[str]:
    """The section's part of docs/benchmarks.md (empty when it did not run)."""
    if not ml:
        return []
    rounds = ml.get("rounds", 1)
    out = ["### `precog serve` and MLServer (V2, the same LightGBM model)", "",
           f"{' + '.join(ml['packages'])} in `.venv-mlserver`; both on 127.0.0.1, one process"
           f" each, both up, driven in turn by precog/bench/serve_load.py ({rounds} round(s),"
           f" the order swapped each round; medians, spread in brackets):"
           f" {ml['seconds_per_rate']:g} s at each fixed rate (open loop: latency from the"
           f" scheduled send), then {ml['saturation_clients']} clients back to back (the"
           " saturation rate). precog's request is the event (Redis state, featurize, leader"
           " + challenger, publish with Kafka's ack, state and answer written); MLServer's the"
           " leader's feature vector (predict only). The ratio is the median of the rounds'"
           " ratios.", "",
           "| rate (req/s) | precog p50 | precog p99 | MLServer p50 | MLServer p99 |"
           " p99 precog / MLServer |", "|---|---|---|---|---|---|"]
    for p, m in zip(ml["precog"]["rates"], ml["mlserver"]["rates"], strict=True):
        out.append(f"| {p['rate']:g} | {_spread(p, 'p50')} | {_spread(p, 'p99')} |"
                   f" {_spread(m, 'p50')} | {_spread(m, 'p99')} |"
                   f" {ml['p99_ratio'][str(p['rate'])]:.2f}x |")
    ps, ms = ml["precog"]["saturation"], ml["mlserver"]["saturation"]
    out += ["", f"Saturation ({ml['saturation_clients']} clients): precog"
            f" {ps['requests_per_s']:.0f} req/s (p99 {ps['p99_ms']:.1f} ms), MLServer"
            f" {ms['requests_per_s']:.0f} req/s (p99 {ms['p99_ms']:.1f} ms):"
            f" {ml['saturation_ratio']:.2f}x.", ""]
    return out


def main() -> None:
    """``python -m precog.bench.mlserver setup``: create ``.venv-mlserver``."""
    if sys.argv[1:] != ["setup"]:
        raise SystemExit("usage: python -m precog.bench.mlserver setup")
    print(f"mlserver: {ensure_mlserver()}")


if __name__ == "__main__":
    main()
