"""The monitor agent counts a record with an out-of-bounds event time at its Kafka timestamp."""

from __future__ import annotations

from types import SimpleNamespace

from precog.services.agents.monitor import MonitorAgent

from precog.avro import Codec
from precog.settings import Settings
from precog.spec import SPEC_DIR, load_spec

HOUR = 3_600_000
T = 1_790_000_000_000 // HOUR * HOUR  # a whole hour in 2026


def _agent() -> MonitorAgent:
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    rt = SimpleNamespace(spec=spec, settings=Settings(namespace="unit"), codec=Codec.for_schema)
    return MonitorAgent(rt, producer=None)  # type: ignore[arg-type]  # on_event only


def test_hostile_event_times_open_no_window_before_the_epoch() -> None:
    agent = _agent()
    codec = Codec.for_schema("transaction")
    ok = {"event_id": "e", "card_id": "card-1", "customer_id": "c", "merchant_id": "m",
          "category": "fuel", "amount": 10.0, "currency": "EUR", "country": "DE",
          "channel": "pos", "event_time": T + 60_000}
    for i, t in enumerate((-(2**63), 0, -5, T + 60_000)):
        agent.on_event(codec.encode({**ok, "event_id": f"e{i}", "event_time": t}),
                       T + 120_000)
    out = agent.monitor.tick(T + 30 * HOUR, watermark=T + 30 * HOUR)
    starts = {d["window_start"] for d in out.health}
    assert out.health and starts == {T}  # all four counted in the record's own hour
