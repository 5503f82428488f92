"""The monitor agent's tick with a recording producer and a stand-in Elasticsearch client:
labeled records in; the metrics and alerts a plain :class:`Monitor` computes, published
(acknowledged) before the documents, which wait while Elasticsearch is down.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import precog.services.agents.monitor as monitor_agent
import pytest
from elastic_transport import JsonSerializer
from elasticsearch import ConnectionError as ESConnectionError
from precog.services.agents.monitor import MonitorAgent, monitor_config

from precog.avro import Codec
from precog.monitor import Monitor
from tests.unit.memory import RecordingProducer
from tests.unit.test_score_events import HOUR, T0, runtime, spec

pytestmark = pytest.mark.unit
__all__ = ["spec"]  # the fixture

NOW = T0 + 2 * HOUR


class Elasticsearch:
    """What the bulk helper uses of a client; down (raising) until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.ids: list[str] = []
        json_serializer = JsonSerializer()
        self.transport = SimpleNamespace(
            serializers=SimpleNamespace(get_serializer=lambda mimetype: json_serializer))

    def options(self, **kwargs: Any) -> Elasticsearch:
        return self

    async def bulk(self, operations: list[Any], **kwargs: Any) -> Any:
        if not self.up:
            raise ESConnectionError("connection refused")
        actions = [json.loads(op) for op in operations[::2]]
        self.ids += [a["index"]["_id"] for a in actions]
        return SimpleNamespace(body={"errors": False, "items": [
            {"index": {"_id": a["index"]["_id"], "status": 201}} for a in actions]})


def labeled(n: int) -> list[dict[str, Any]]:
    """Labeled records of one model: every third event a fraud, every fourth misjudged."""
    out = []
    for i in range(n):
        outcome = int(i % 3 == 0)
        label = 1 - outcome if i % 4 == 0 else outcome
        t = T0 + i * 60_000
        out.append({"model_id": "amount-odds", "version": 3, "role": "leader",
                    "prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": "card-1",
                    "source": "transactions", "event_time": t, "scored_time": t + 5,
                    "outcome_time": t + HOUR, "score": 0.9 if label else 0.1, "label": label,
                    "outcome": outcome, "label_latency_ms": HOUR, "features": None})
    return out


def test_a_tick_publishes_what_the_monitor_computes_and_holds_documents_while_es_is_down(
    spec: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitor_agent, "now_ms", lambda: NOW)
    es = Elasticsearch()
    rt, effects = runtime(spec, es=es), []
    producer = RecordingProducer(effects)
    no_reference = lambda model_id, version: None  # noqa: E731
    agent = MonitorAgent(rt, producer, Monitor(monitor_config(rt), no_reference))
    offline = Monitor(monitor_config(rt), no_reference)
    codec = Codec.for_schema("labeled")
    for rec in labeled(40):
        agent.on_labeled(codec.encode(rec))
        offline.on_labeled(rec)
    expected = offline.tick(NOW)

    asyncio.run(agent.tick())

    s = rt.settings
    metrics = [Codec.for_schema("metrics").decode(r.value) for r in producer.on(s.topic("metrics"))]
    assert metrics == expected.metrics and metrics
    alerts = [Codec.for_schema("alert").decode(r.value) for r in producer.on(s.topic("alerts"))]
    assert alerts == expected.alerts
    assert all(r.acknowledged for r in producer.sent)
    assert effects == [("produce", s.topic("metrics")), ("produce", s.topic("alerts"))]
    waiting = len(expected.metrics) + len(expected.alerts) + len(expected.health)
    assert len(agent.pending_docs) == waiting
    assert "elasticsearch" in rt.health.problems()

    es.up = True
    asyncio.run(agent.tick())
    assert agent.pending_docs == []
    first_ids = [f"{m['model_id']}:{m['version']}:{m['window']}:{m['computed_time']}"
                 for m in expected.metrics] + [a["alert_id"] for a in expected.alerts]
    assert es.ids[:len(first_ids)] == first_ids  # the held documents first, in order
    assert rt.health.problems() == {}
