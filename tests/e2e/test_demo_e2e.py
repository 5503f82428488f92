"""The demo's scenario on the real stack: every monitor fires where the schedule put a fault,
and the concept drift closes the loop: alert -> retrain -> challengers -> canary start ->
step(s) -> promote or rollback.

Seeded: the quick demo plan streams garbage, a concept + data drift (amount) and a 30%
volume drop through a live worker in accelerated event time, then more of the drifted world
after the retrain, in parts with a canary decision between them.
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
        assert failed == dead == sum(s.garbage.values()) + sum(sum(a.garbage.values())
                                                              for a in after)

        # the trail: the drift alert triggered one retrain run, which registered the spec's
        # models as challengers; a canary of the best retrained version started, was
        # stepped up on its arm's evidence, and was promoted or rolled back
        retrain, canary = result.retrain, result.canary
        assert retrain is not None, "no retrain was triggered"
        kinds_seen = [d["kind"] for d in result.trail]
        assert kinds_seen == ["retrain"] + ["traffic"] * len(canary) + ["promotion"], kinds_seen
        assert result.trail[0]["decision_id"] == retrain["decision_id"]
        assert [d["decision_id"] for d in result.trail[1:-1]] == [d["decision_id"] for d in canary]
        # the promotion policy's review after the canary: paired evidence on every model, and
        # the leader kept within the cool-down that the canary's last change of the roles began
        review = result.review
        assert result.trail[-1]["decision_id"] == review["decision_id"]
        assert review["action"] == "keep" and review["reason"], review
        assert review["candidates"] and all(c["n"] > 0 for c in review["candidates"]), review
        trigger, _, evidence = retrain["policy"].partition(": ")
        alert_id = evidence.split()[1].rstrip(":")
        (alert,) = [a for a in alerts if a["alert_id"] == alert_id]
        assert trigger == "concept_drift" and alert["kind"] == "concept_drift"
        assert (alert["model_id"], alert["version"]) == ("fraud-lgbm", 1)
        assert alert["event_time"] >= result.live_start_ms + plan.concept_drift_at * step
        new = {("fraud-lgbm", 2), ("fraud-logreg", 2)}
        assert retrain["action"] == "registered"
        assert {(c["model_id"], c["version"]) for c in retrain["candidates"]} == new

        # the candidate: the retrained version with the best holdout metric
        best = max((c for c in retrain["candidates"] if c["status"] == "registered"),
                   key=lambda c: c["value"])
        cand = (best["model_id"], best["version"])
        steps = list(plan.canary_steps)
        actions = [d["action"] for d in canary]
        assert actions[0] == "start" and actions[-1] in ("promote", "rollback"), actions
        assert all(a == "step" for a in actions[1:-1]), actions
        assert all(d["kind"] == "traffic" and d["policy"] == "canary" for d in canary)
        assert all((d["chosen"]["model_id"], d["chosen"]["version"]) == cand for d in canary)
        assert canary[0]["traffic"]["to_percent"] == steps[0]
        for i, d in enumerate(canary[1:], start=1):  # each decision follows its evidence
            ev, (c,) = d["traffic"], d["candidates"]
            assert ev["from_percent"] == steps[i - 1], (i, ev)
            assert ev["arm_labels"] == c["n"] > 0, (ev, c)
            drop = c["leader_value"] - c["value"]
            increase = ev["error_rate"] - ev["leader_error_rate"]
            worse = ev["arm_labels"] >= plan.canary_rollback_min_labels and (
                drop > ev["max_drop"] or increase > ev["max_error_increase"])
            if d["action"] == "rollback":
                assert worse and c["status"] == "worse" and ev["to_percent"] == 0.0, d
            else:  # a step up, or the promotion at 100%
                assert not worse and c["status"] == "holds", d
                assert ev["arm_labels"] >= plan.canary_min_labels, d
                assert ev["to_percent"] == steps[i], d
                assert (d["action"] == "promote") == (steps[i] == 100), d
            assert d["reason"], d
        from precog.services.model_control import read_roles

        from precog.spec import load_spec

        pipeline_salt = load_spec(settings.spec).traffic.salt
        roles = read_roles(settings, "transactions")
        assert roles.traffic is None, "the canary ended"
        held = {(r.model_id, r.version) for r in (roles.leader, *roles.challengers)}
        if actions[-1] == "promote":
            assert (roles.leader.model_id, roles.leader.version) == cand
            assert ("fraud-lgbm", 1) in held  # the old leader stays a challenger
        else:
            assert (roles.leader.model_id, roles.leader.version) == ("fraud-lgbm", 1)
            assert cand not in held  # a rolled-back candidate leaves the challengers
        assert new - {cand} <= held

        # the canary decided for its share of the cards: in the first part after the start,
        # a card is on the canary arm exactly when its bucket is below the start's weight
        from precog.avro import Codec
        from precog.replay.runner import read_topic
        from precog.traffic import bucket, percent_to_weight

        codec = Codec.for_schema("prediction")
        first = [r for r in (codec.decode(m.value()) for m in read_topic(settings, "predictions"))
                 if canary[0]["traffic"]["since"] <= r["event_time"] < canary[1]["window_end"]]
        weight = percent_to_weight(steps[0])
        assert first
        for r in first:
            b = bucket(r["entity_id"], pipeline_salt)
            assert r["served"]["bucket"] == b, r["served"]
            assert r["served"]["arm"] == ("canary" if b < weight else "leader"), r["served"]
        on_canary = {r["entity_id"] for r in first if r["served"]["arm"] == "canary"}
        share = len(on_canary) / len({r["entity_id"] for r in first})
        assert abs(share - steps[0] / 100) < 0.05, share

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
