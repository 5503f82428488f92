"""The demo's scenario on the real stack: every monitor fires where the schedule put a fault.

Seeded: the quick demo plan streams garbage, a concept + data drift (amount) and a 30%
volume drop through a live worker in accelerated event time.
"""

from __future__ import annotations

from collections import Counter

import pytest
from elasticsearch import helpers

from precog.io.elasticsearch import elasticsearch_client
from precog.namespace import drop_namespace
from precog.pipeline_demo import run
from precog.settings import Settings
from tests.conftest import unique_namespace

pytestmark = pytest.mark.e2e


def test_the_demo_reconciles_and_every_monitor_fires_where_scheduled(stack, tmp_path):
    ns = unique_namespace()
    base = Settings()
    try:
        result = run(base, namespace=ns, quick=True, home=tmp_path / "home",
                     report_dir=tmp_path / "report")
        settings = base.model_copy(update={"namespace": ns})
        es = elasticsearch_client(settings)
        for name in ("alerts", "pipeline-health", "metrics"):
            es.indices.refresh(index=settings.index(name))

        def docs(name: str) -> list[dict]:
            return [h["_source"] for h in helpers.scan(es, index=settings.index(name))]

        assert result.ok, "events = predictions + dead letters, docs = 2 x predictions"
        plan, s = result.plan, result.summary
        alerts = docs("alerts")
        kinds = Counter(a["kind"] for a in alerts)

        # the volume drop: alerts only for windows that overlap the dropped events
        step = plan.event_ms_per_event
        drop_from = result.live_start_ms + plan.volume_drop_at * step
        drop_to = result.live_start_ms + (plan.volume_drop_at + plan.volume_drop_len) * step
        volume = [a for a in alerts if a["kind"] == "volume"]
        assert volume, kinds
        window = 3_600_000
        for a in volume:
            start = a["event_time"] - window  # fired at the window's end
            assert drop_from - window <= start <= drop_to, a["message"]

        # the data drift on amount is reported for amount
        drifted = {a["feature"] for a in alerts if a["kind"] == "data_drift"}
        assert "amount" in drifted, drifted

        # garbage: every quality failure is a dead letter, and both equal what was sent
        health = docs("pipeline-health")
        # (per window: one row per failed check and a "total" row of records failing any)
        failed = sum(h["count"] for h in health if h["kind"] == "quality" and h["name"] == "total")
        dead = sum(h["count"] for h in health if h["kind"] == "dead_letter")
        assert failed == dead == sum(s.garbage.values())

        # leader and challenger metrics were published
        roles = {(m["model_id"], m["role"]) for m in docs("metrics") if m["window"] == "cumulative"}
        assert roles == {("fraud-lgbm", "leader"), ("fraud-logreg", "challenger")}
        assert result.report.exists()

        # after this end-to-end run every dashboard panel has data, and every chart is drawn
        from precog.dashboards import dashboards, load_templates
        from precog.report import write_report
        from precog.spec import load_spec

        pipeline = load_spec(settings.spec)
        # the replay comparison dashboard shows `precog replay compare --index` runs, which
        # the demo does not make (tests/integration/test_report.py seeds them)
        boards = [b for b in dashboards(pipeline.feature_names, pipeline.business)
                  if b.id != "precog-replay-compare"]
        report = write_report(es, ns, boards, load_templates(),
                              tmp_path / "panels")
        empty = [r.panel.id for r in report.results if not r.has_data]
        assert empty == [], f"panels without data: {empty}"
        for r in report.results:
            assert r.image is not None and r.image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        es.close()
    finally:
        drop_namespace(Settings(namespace=ns))
