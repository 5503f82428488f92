"""The batch transport's consumers ask the broker for fuller fetches (docs/scoring.md)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from precog.services import batch_transport
from precog.services.batch_transport import BatchSource

from precog.settings import Settings

pytestmark = pytest.mark.unit


class _Consumer:
    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.topics = topics


def _opened_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def consumer(settings: Settings, group: str, **config: Any) -> _Consumer:
        seen.update(config, group=group)
        return _Consumer()

    monkeypatch.setattr(batch_transport.kafka, "consumer", consumer)
    rt = SimpleNamespace(settings=Settings(), worker_name="w1")

    async def handle(records: list[Any]) -> None:
        return None

    BatchSource(rt, "score", ["ns.events"], "precog-ns-score", 500, 0.005, handle)._open()
    return seen


def test_fetches_wait_for_32_kb_or_10_ms_by_default(monkeypatch):
    for name in ("PRECOG_WORKER_BATCH_FETCH_MIN_BYTES", "PRECOG_WORKER_BATCH_FETCH_MAX_WAIT_MS"):
        monkeypatch.delenv(name, raising=False)
    config = _opened_config(monkeypatch)
    assert (config["fetch.min.bytes"], config["fetch.wait.max.ms"]) == (32_768, 10)
    assert config["group"] == "precog-ns-score" and config["enable.auto.commit"] is False


def test_the_fetch_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PRECOG_WORKER_BATCH_FETCH_MIN_BYTES", "1")
    monkeypatch.setenv("PRECOG_WORKER_BATCH_FETCH_MAX_WAIT_MS", "250")
    monkeypatch.setenv("PRECOG_WORKER_FETCH_MAX_WAIT_MS", "900")  # Faust's streams, not these
    config = _opened_config(monkeypatch)
    assert (config["fetch.min.bytes"], config["fetch.wait.max.ms"]) == (1, 250)
