"""Run `precog worker` processes from Python: the demo, the benchmarks and the e2e tests use it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from precog import resources
from precog.settings import Settings

REPO = resources.project_root()


def metric_total(text: str, name: str) -> float:
    r"""Sum of a Prometheus metric over its label sets in ``/metrics`` text.

    >>> metric_total('a_total{x="1"} 2.0\na_total{x="2"} 3.0\nb 1.0', "a_total")
    5.0
    """
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
               timeout: float = 30.0) -> None:
    """Signal a process started with ``start_new_session`` and its children; KILL if slow."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (held open together, so the kernel cannot repeat one)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def second_stack_settings(home: Path, **extra: Any) -> Settings:
    """Settings of a second local stack in ``home`` on five free ports (docs/stack.md).

    Its clients follow those ports unless ``PRECOG_KAFKA_BOOTSTRAP``/``_REDIS_URL``/
    ``_ELASTICSEARCH_URL`` are set, which the caller clears when they would point elsewhere.
    """
    kafka, controller, redis, es, transport = free_ports(5)
    return Settings(stack={"home": home, "kafka_port": kafka, "kafka_controller_port": controller,
                           "redis_port": redis, "elasticsearch_port": es,
                           "elasticsearch_transport_port": transport, **extra})


def worker_env(settings: Settings, port: int, data_dir: Path) -> dict[str, str]:
    """Environment of a worker subprocess for ``settings`` (its namespace, registry, spec)."""
    env = dict(os.environ)
    env.update(
        {
            "PRECOG_NAMESPACE": settings.namespace,
            "PRECOG_REGISTRY_DIR": str(settings.registry_dir),
            "PRECOG_SPEC": str(settings.spec),
            "PRECOG_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "PRECOG_REDIS_URL": settings.redis.url,
            "PRECOG_ELASTICSEARCH_URL": settings.elasticsearch.url,
            "PRECOG_WORKER_WEB_PORT": str(port),
            "PRECOG_WORKER_DATA_DIR": str(data_dir),
            "PRECOG_SCORE_BATCH_SIZE": str(settings.score.batch_size),
            "PRECOG_SCORE_BATCH_TIMEOUT": str(settings.score.batch_timeout),
            "PRECOG_SCORE_INFLIGHT_BATCHES": str(settings.score.inflight_batches),
            "PRECOG_INDEXER_BATCH_TIMEOUT": str(settings.indexer.batch_timeout),
            "PRECOG_MONITOR_TICK_SECONDS": str(settings.monitor.tick_seconds),
        }
    )
    if settings.code_version:
        env["PRECOG_CODE_VERSION"] = settings.code_version
    registry = settings.schema_registry
    env["PRECOG_SCHEMA_REGISTRY_URL"] = registry.url
    if registry.confluent_namespaces:
        env["PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES"] = ",".join(registry.confluent_namespaces)
    return env


class WorkerProcess:
    """A `precog worker` subprocess; its log is kept for failure messages."""

    def __init__(
        self,
        settings: Settings,
        tmp: Path,
        agents: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.port = free_port()
        self.log_path = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        cmd = [sys.executable, "-m", "precog", "worker", "--loglevel", "info"]
        if agents:
            cmd += ["--agents", agents]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**worker_env(settings, self.port, tmp / "worker-data"), **(extra_env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def first_error(self, after: int = 12) -> str:
        """The log's first ERROR or CRITICAL line and the ``after`` lines that follow it (the
        cause of a crash, which the shutdown's own tracebacks push out of :meth:`log_tail`)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "[ERROR]" in line or "[CRITICAL]" in line:
                return "\n".join(lines[i:i + 1 + after])
        return ""

    def health(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()

    def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.health()
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        stop_group(self.proc, sig, timeout)
        self._log.close()


@contextmanager
def running_worker(
    settings: Settings,
    tmp: Path,
    agents: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp, agents, extra_env)
    try:
        w.wait_healthy()
        yield w
    finally:
        w.stop()
