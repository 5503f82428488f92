"""End-to-end helpers: run real `precog worker` processes and read topics back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from precog.avro import Codec
from precog.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            "PRECOG_SCORE_BATCH_TIMEOUT": "0.05",
            "PRECOG_INDEXER_BATCH_TIMEOUT": "0.2",
        }
    )
    if settings.code_version:
        env["PRECOG_CODE_VERSION"] = settings.code_version
    return env


class WorkerProcess:
    """A `precog worker` subprocess; its log is kept for failure messages."""

    def __init__(self, settings: Settings, tmp: Path, agents: str | None = None) -> None:
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
            env=worker_env(settings, self.port, tmp / "worker-data"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@contextmanager
def running_worker(
    settings: Settings, tmp: Path, agents: str | None = None
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp, agents)
    try:
        w.wait_healthy()
        yield w
    finally:
        w.stop()


def read_topic(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float = 120.0,
    settle: float = 2.0,
) -> list[Any]:
    """Every message of ``topic`` from the beginning: waits for ``expected`` then ``settle``
    more seconds so that extra (duplicate) messages would be seen too."""
    cfg = dict(settings.kafka.confluent_config())
    cfg.update({"group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                "enable.auto.commit": False})
    consumer = Consumer(cfg)
    md = consumer.list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(str(msg.error()))
            if len(out) >= expected and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        consumer.close()
    return out


def decode_all(messages: list[Any], schema: str) -> list[dict[str, Any]]:
    codec = Codec.for_schema(schema)
    return [codec.decode(m.value()) for m in messages]
