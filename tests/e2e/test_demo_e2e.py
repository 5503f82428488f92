"""The demo's scenario on the real stack: every monitor fires where the schedule put a fault,
and the concept drift closes the loop: alert -> retrain -> challengers -> decision.

Seeded: the quick demo plan streams garbage, a concept + data drift (amount) and a 30%
volume drop through a live worker in accelerated event time, then more of the drifted world
after the retrain.
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

        assert result.ok, "events = predictions + dead letters, docs = models x predictions"
        plan, s, after = result.plan, result.summary, result.after
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
        assert failed == dead == sum(s.garbage.values()) + sum(after.garbage.values())

        # the trail: the drift alert triggered one retrain run, which registered the spec's
        # models as challengers; the promotion policy decided on the evidence after it
        retrain, decision = result.retrain, result.decision
        assert retrain is not None, "no retrain was triggered"
        assert [d["kind"] for d in result.trail] == ["retrain", "promotion"]
        assert result.trail[0]["decision_id"] == retrain["decision_id"]
        assert result.trail[1]["decision_id"] == decision["decision_id"]
        trigger, _, evidence = retrain["policy"].partition(": ")
        alert_id = evidence.split()[1].rstrip(":")
        (alert,) = [a for a in alerts if a["alert_id"] == alert_id]
        assert trigger == "concept_drift" and alert["kind"] == "concept_drift"
        assert (alert["model_id"], alert["version"]) == ("fraud-lgbm", 1)
        assert alert["event_time"] >= result.live_start_ms + plan.concept_drift_at * step
        new = {("fraud-lgbm", 2), ("fraud-logreg", 2)}
        assert retrain["action"] == "registered"
        assert {(c["model_id"], c["version"]) for c in retrain["candidates"]} == new
        judged = {(c["model_id"], c["version"]): c for c in decision["candidates"]}
        assert set(judged) == new | {("fraud-logreg", 1)}
        for ref in new:  # every retrained version was judged on paired evidence
            c = judged[ref]
            assert c["status"] in ("supported", "not-better"), c
            assert c["n"] >= plan.min_labels and c["p_value"] is not None
        from precog.services.model_control import read_roles

        roles = read_roles(settings, "transactions")
        if decision["action"] == "promote":
            chosen = (decision["chosen"]["model_id"], decision["chosen"]["version"])
            assert judged[chosen]["status"] == "supported"
            assert (roles.leader.model_id, roles.leader.version) == chosen
        else:
            assert decision["action"] == "keep" and decision["reason"]
            assert all(c["status"] != "supported" for c in judged.values())
            assert (roles.leader.model_id, roles.leader.version) == ("fraud-lgbm", 1)
        assert new <= {(r.model_id, r.version) for r in (roles.leader, *roles.challengers)}

        # metrics of the leader, the trained challenger and the retrained ones were published
        roles_seen = {(m["model_id"], m["version"], m["role"]) for m in docs("metrics")
                      if m["window"] == "cumulative"}
        assert {("fraud-lgbm", 1, "leader"), ("fraud-logreg", 1, "challenger"),
                ("fraud-lgbm", 2, "challenger"), ("fraud-logreg", 2, "challenger")} <= roles_seen
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
