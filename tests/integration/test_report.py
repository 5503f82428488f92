"""``precog report`` against the real Elasticsearch: seeded documents of every documented shape.

The namespace comes from the shared ``settings`` fixture (index templates applied, all
deleted afterwards). Documents follow docs/documents.md exactly, and the strict templates
reject anything else, so this also proves the writers' contract fits the panels.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from elasticsearch import Elasticsearch, helpers

from precog.dashboards import DateHistogram, Histogram, Terms, bucket_name, dashboards
from precog.dashboards import load_templates as load_kibana_templates
from precog.io.elasticsearch import elasticsearch_client
from precog.report import run_panel, write_report
from precog.settings import Settings
from precog.spec import BusinessSpec

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
MIN = 60_000
FEATURES = ("amount", "count_1h")
#: the transactions domain's wording and amount (its spec's ``business``)
BUSINESS = BusinessSpec(amount_feature="amount", event_noun="transactions", positive_noun="fraud",
                        negative_decision="approved", positive_decision="declined")
MODELS = (("fraud-lgbm", 1, "leader"), ("fraud-logreg", 1, "challenger"))


def _served_label(i: int) -> int:
    """The served decision of event ``i``: fraud-logreg's on the canary arm, else the leader's."""
    score = ((i * 53) % 100) / 100 if i % 4 == 0 else ((i * 37) % 100) / 100
    return int(score >= 0.7)


def _prediction(ns: str, i: int, model: str, version: int, role: str) -> dict[str, Any]:
    event_time = T0 + i * 5 * MIN
    score = ((i * 37) % 100) / 100 if role == "leader" else ((i * 53) % 100) / 100
    leader_label = int(((i * 37) % 100) / 100 >= 0.7)
    canary_arm = i % 4 == 0  # a canary of fraud-logreg v1 decides a quarter of the events
    served_model = "fraud-logreg" if canary_arm else "fraud-lgbm"
    doc: dict[str, Any] = {
        "prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": f"card-{i % 7}",
        "source": "transactions", "namespace": ns, "event_time": event_time,
        "scored_time": event_time + 40, "indexed_time": event_time + 900,
        "model_id": model, "model_version": version, "role": role, "score": score,
        "label": int(score >= 0.7), "threshold": 0.7, "artifact_sha256": "ab" * 32,
        "leader_model_id": "fraud-lgbm", "leader_version": 1 if i < 30 else 2,
        "leader_label": leader_label, "amount": 10.0 + i,
        "policy": "canary", "arm": "canary" if canary_arm else "leader",
        "served": model == served_model, "served_model_id": served_model, "served_version": 1,
        "served_label": _served_label(i),
        "features": {"amount": 10.0 + i, "count_1h": i % 4},
        "feature_ages_ms": {"amount": 0, "count_1h": (i % 4) * 1000},
        "outlier": i % 11 == 0, "outlier_score": (i % 11) / 11,
        "provenance": {"code_version": "abc123", "event_schema": "precog.events.Transaction/v1",
                       "prediction_schema": "precog.predictions.Prediction/v1",
                       "spec": "transactions", "source_topic": f"{ns}.events.transactions",
                       "worker": "host:1", "partition": i % 4, "offset": i},
    }
    if i % 3 == 0:  # a third of the events have their delayed outcome joined
        doc.update(outcome_label=int(i % 2 == 0), outcome_time=event_time + 3_600_000)
    return doc


def _documents(ns: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    preds = [(f"p{i}:{m}:{v}", _prediction(ns, i, m, v, r))
             for i in range(60) for m, v, r in MODELS]
    metrics = [(f"{m}:{v}:{w}:{t}", {
        "namespace": ns, "model_id": m, "version": v, "role": r, "window": w,
        "n_labels": 10 * (t + 1), "accuracy": 0.9 + t / 1000, "precision": 0.5, "recall": 0.4,
        "f1": 0.44, "roc_auc": 0.8 if r == "leader" else 0.7, "log_loss": 0.3,
        "label_coverage": 0.2 + t / 100, "label_latency_p50_ms": 3.6e6,
        "label_latency_p95_ms": 7.2e6, "event_time": T0 + t * 30 * MIN,
        "computed_time": T0 + t * 30 * MIN + 5})
        for m, v, r in MODELS
        for w in ("cumulative", "last_1000", "estimated_1h", "realised_1h") for t in range(10)]
    metrics += [(f"{m}:{v}:cumulative:{arm}:{t}", {  # per traffic arm: the arm's model
        "namespace": ns, "model_id": m, "version": v, "role": r, "window": "cumulative",
        "arm": arm, "n_labels": 5 * (t + 1), "accuracy": 0.9, "precision": 0.5 + t / 100,
        "recall": 0.4, "f1": 0.44 + t / 100, "roc_auc": 0.8, "log_loss": 0.3,
        "label_coverage": 0.2, "label_latency_p50_ms": 3.6e6, "label_latency_p95_ms": 7.2e6,
        "event_time": T0 + t * 30 * MIN, "computed_time": T0 + t * 30 * MIN + 5})
        for (m, v, r), arm in zip(MODELS, ("leader", "canary"), strict=True) for t in range(10)]
    alerts = [(f"a{i}", {
        "alert_id": f"a{i}", "namespace": ns, "kind": kind, "detector": det, "severity":
        "warning", "model_id": "fraud-lgbm", "version": 1, "feature": feat,
        "source": "transactions", "window": "last_1h", "statistic": 0.3 + i / 10,
        "threshold": 0.2, "message": f"{det} fired", "event_time": T0 + i * 20 * MIN,
        "detected_time": T0 + i * 20 * MIN + 7})
        for i, (kind, det, feat) in enumerate([
            ("data_drift", "PSI", "amount"), ("data_drift", "PSI", "count_1h"),
            ("concept_drift", "ADWIN", None), ("prediction_drift", "PSI-score", None),
            ("data_drift", "PSI", "amount")])]
    health = []
    for w in range(6):
        start = T0 + w * 10 * MIN
        base = {"namespace": ns, "source": "transactions", "window_start": start,
                "window_end": start + 10 * MIN, "computed_time": start + 11 * MIN}
        for kind, name, extra in [
            ("volume", "total", {"count": 0, "received": 100 - w, "expected": 100.0,
                                 "expected_baseline": 98.0, "ratio": (100 - w) / 100}),
            ("quality", "amount.range", {"count": w}),
            ("dead_letter", "DecodeError", {"count": w % 3}),
            ("outlier", "multivariate", {"count": 2}),
            ("lag", "score-agent", {"count": 0, "lag": 10 * w})]:
            health.append((f"transactions:{kind}:{name}:{start}",
                           {**base, "kind": kind, "name": name, **extra}))
    models = [(f"{m}:{v}", {
        "model_id": m, "algorithm": "lightgbm" if r == "leader" else "sklearn-logistic",
        "spec": "transactions", "namespace": ns, "artifact_sha256": "cd" * 32,
        "artifact_format": "lightgbm-text", "artifact_path": f"registry/{m}/{v}",
        "code_version": "abc123", "training_data_sha256": "ef" * 32, "version": v,
        "features": list(FEATURES), "training_window_start": T0 - 30 * 86_400_000,
        "training_window_end": T0 - 86_400_000, "holdout_start": T0 - 7 * 86_400_000,
        "holdout_end": T0 - 86_400_000, "created_time": T0, "training_rows": 10_000,
        "holdout_rows": 2_000, "threshold": 0.7,
        "holdout": {"precision": 0.5, "recall": 0.4, "f1": 0.44, "roc_auc": 0.8,
                    "log_loss": 0.3, "positive_rate": 0.02}}) for m, v, r in MODELS]
    cid = f"prod:{ns}:{T0}"
    common = {"compare_id": cid, "left_namespace": "prod", "right_namespace": ns,
              "computed_time": T0}
    compare = [(f"{cid}:summary", {**common, "kind": "summary", "events_left": 60,
                                   "events_right": 58, "events_both": 58, "only_left": 2,
                                   "only_right": 0, "leader_agreement": 0.95, "count": 58})]
    compare += [(f"{cid}:model:{m}:{v}", {
        **common, "kind": "model", "model_id": m, "model_version": v, "count": 58,
        "equal_count": 50, "max_abs_diff": 0.2, "mean_abs_diff": 0.01,
        "label_agreement": 0.97}) for m, v, _ in MODELS]
    compare += [(f"{cid}:disagreement:e{i}", {
        **common, "kind": "disagreement", "rank": i + 1, "event_id": f"e{i}",
        "entity_id": f"card-{i}", "event_time": T0 + i, "left_model_id": "fraud-lgbm",
        "left_version": 1, "left_score": 0.8, "left_label": 1, "right_model_id": "fraud-lgbm",
        "right_version": 1, "right_score": 0.6, "right_label": 0, "abs_diff": 0.2})
        for i in range(2)]
    decisions = [(d["decision_id"], d) for d in (*_decisions(ns), *_traffic_decisions(ns))]
    return {"predictions": preds, "metrics": metrics, "alerts": alerts,
            "pipeline-health": health, "models": models, "replay-compare": compare,
            "decisions": decisions}


def _decisions(ns: str) -> list[dict[str, Any]]:
    """Documents of real decisions: the policy on seeded labels, one per hour."""
    from precog.services.lifecycle import decision_document

    from precog.lifecycle.policy import LabelledWindow, decide
    from precog.roles import ModelRef, initial_roles
    from precog.spec import PromotionSpec

    rng = np.random.default_rng(4)
    policy = PromotionSpec(policy="best-recent", min_labels=50, bootstrap_samples=100,
                           cooldown="0s")
    roles = initial_roles("transactions", ModelRef("fraud-lgbm", 1),
                          [ModelRef("fraud-logreg", 1)], at=T0, by="t")
    out = []
    for h in range(6):
        recs = [{"model_id": m, "version": 1, "event_id": f"e{i}", "event_time": T0 + i,
                 "score": float(s), "label": int(s >= 0.5), "outcome": int(i % 5 == 0)}
                for i in range(200) for m, s in (("fraud-lgbm", rng.random()),
                                                  ("fraud-logreg", rng.random()))]
        window = LabelledWindow.from_records(recs, T0, T0 + 10**6)
        d = decide(policy, roles, window, now_ms=T0 + h * 3_600_000)
        out.append(decision_document(
            {**d.to_record(), "decision_id": f"d{h}", "evaluated_time": T0 + h * 3_600_000},
            ns))
    return out


def _traffic_decisions(ns: str) -> list[dict[str, Any]]:
    """Documents of real traffic decisions: a canary of fraud-logreg v1 started at 5%, then
    stepped up to 25% on seeded canary-arm labels where it is the better model."""
    from precog.services.lifecycle import decision_document

    from precog.lifecycle.canary import apply_traffic, arm_window, decide_traffic
    from precog.roles import ModelRef, initial_roles
    from precog.spec import TrafficSpec

    hour = 3_600_000
    policy = TrafficSpec(policy="canary", candidate="fraud-logreg", steps=[5, 25, 100],
                         min_labels=100, rollback_min_labels=50, max_drop=0.05,
                         max_error_increase=0.02, interval="1h")
    roles = initial_roles("transactions", ModelRef("fraud-lgbm", 1),
                          [ModelRef("fraud-logreg", 1)], at=T0, by="t")
    rng = np.random.default_rng(5)
    out = []
    for h in (1, 2):
        since = roles.traffic.since if roles.traffic else T0
        y = rng.random(200) < 0.3
        recs = [{"model_id": m, "version": 1, "event_id": f"e{i}", "event_time": since + 1 + i,
                 "score": float(s), "label": int(s >= 0.5), "outcome": int(y[i]),
                 "arm": "canary", "served": m == "fraud-logreg"}
                for i in range(200) for m, s in (
                    ("fraud-lgbm", 0.9 if y[i] == (i % 3 != 0) else 0.1),
                    ("fraud-logreg", 0.9 if y[i] else 0.1))]
        now = T0 + h * hour
        d = decide_traffic(policy, roles, arm_window(recs, "canary", since, now), now_ms=now)
        record = {**d.to_record(), "evaluated_time": now}
        out.append(decision_document(record, ns))
        roles = apply_traffic(policy, roles, record, now_ms=now) or roles
    assert [d["action"] for d in out] == ["start", "step"], [d["reason"] for d in out]
    return out


def _seed(es: Elasticsearch, settings: Settings) -> None:
    actions = [{"_index": settings.index(name), "_id": doc_id, "_source": doc}
               for name, docs in _documents(settings.namespace).items()
               for doc_id, doc in docs]
    ok, errors = helpers.bulk(es, actions, refresh="wait_for", raise_on_error=False)
    assert errors == [] and ok == len(actions)


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100 and data[12:16] == b"IHDR"


@pytest.fixture
def es(settings: Settings) -> Any:
    client = elasticsearch_client(settings)
    yield client
    client.close()


def test_every_panel_has_data_of_its_shape_and_every_png_is_written(
        settings: Settings, es: Elasticsearch, tmp_path: Path) -> None:
    _seed(es, settings)
    boards = dashboards(FEATURES, BUSINESS)
    report = write_report(es, settings.namespace, boards, load_kibana_templates(),
                          tmp_path / "report")

    assert [r.error for r in report.results if r.error] == []
    empty = [r.panel.id for r in report.results if not r.rows]
    assert empty == []
    assert report.with_data == len(report.results) == sum(len(b.panels) for b in boards)
    by_id = {r.panel.id: r for r in report.results}
    for r in report.results:
        assert _is_png(r.image), r.panel.id
        p = r.panel
        for b in p.nesting():  # every bucket level is a column of every row
            assert all(bucket_name(b) in row for row in r.rows), p.id
            if isinstance(b, DateHistogram):
                assert len({row[bucket_name(b)] for row in r.rows}) > 1, p.id
            if isinstance(b, Histogram):
                assert all(0.0 <= row[bucket_name(b)] < 1.0 for row in r.rows), p.id
        if p.kind == "search":
            assert all(set(row) <= set(p.columns) for row in r.rows), p.id
        else:
            assert all(m.name in row for m in p.metrics for row in r.rows), p.id

    def keys(panel_id: str, name: str) -> set[Any]:
        return {row[name] for row in by_id[panel_id].rows}

    # one series per model, version and role
    assert keys("mp-f1", "model") == {"fraud-lgbm · 1 · leader", "fraud-logreg · 1 · challenger"}
    assert keys("da-by-detector", "detector") == {"PSI", "ADWIN", "PSI-score"}
    assert keys("da-feature-drift", "feature") == {"amount", "count_1h"}
    assert keys("ph-dead-letters", "dead_letter") == {"DecodeError"}
    assert keys("ph-volume", "source") == {"transactions"}
    assert keys("bv-approval", "decision") == {"approved", "declined"}
    assert keys("mp-leader-timeline", "version") == {1, 2}
    assert keys("pp-scores", "model") == {"fraud-lgbm · 1 · leader",
                                          "fraud-logreg · 1 · challenger"}
    # received / expected of each bucket: sum(received) / sum(expected), not min(ratio)
    ratio = {r["window_start"]: r["received / expected"] for r in by_id["ph-ratio"].rows}
    assert sorted(ratio.values()) == sorted((100 - w) / 100 for w in range(6))
    # exact values: 60 served decisions (the canary's on its arm), those flagged
    flagged = sum(_served_label(i) for i in range(60))
    assert flagged != sum(((i * 37) % 100) / 100 >= 0.7 for i in range(60))  # not the leader's
    assert by_id["bv-flagged"].rows[0]["flagged"] == flagged
    assert by_id["bv-at-risk"].rows[0]["amount flagged"] == sum(
        10.0 + i for i in range(60) if _served_label(i))
    caught = sum(10.0 + i for i in range(0, 60, 3) if i % 2 == 0 and _served_label(i))
    missed = sum(10.0 + i for i in range(0, 60, 3) if i % 2 == 0 and not _served_label(i))
    totals = by_id["bv-caught-missed"].rows
    assert sum(r["caught"] or 0 for r in totals) == caught
    assert sum(r["missed"] or 0 for r in totals) == missed
    assert len(by_id["pp-models"].rows) == 2
    # the model index ignores the time range: models registered long before it are listed
    later = run_panel(es, by_id["pp-models"].panel, settings.index("models"),
                      (T0 + 10**12, None))
    assert len(later.rows) == 2
    assert keys("rc-models", "model") == {"fraud-lgbm", "fraud-logreg"}
    assert by_id["rc-summary"].rows[0]["events on both"] == 58
    assert len(by_id["rc-disagreements"].rows) == 2
    assert by_id["pp-predictions"].rows[0]["features.amount"] == 10.0 + 59
    # traffic: the canary's decisions, per-arm metrics and the served share per arm
    assert keys("lc-traffic-timeline", "action") == {"start", "step"}
    assert sorted(r["share after (%)"] for r in by_id["lc-canary-share"].rows) == [5.0, 25.0]
    assert keys("lc-arm-f1", "arm") == {"leader · fraud-lgbm · 1 · leader",
                                        "canary · fraud-logreg · 1 · challenger"}
    served = {r["arm"]: 0 for r in by_id["lc-served-share"].rows}
    for r in by_id["lc-served-share"].rows:
        served[r["arm"]] += r["events served"]
    assert served == {"canary": 15, "leader": 45}

    page = report.html.read_text()
    assert settings.namespace in page and "all time" in page
    assert all(f"{r.panel.id}.png" in page for r in report.results)


def test_empty_namespace_draws_no_data_images(settings: Settings, es: Elasticsearch,
                                              tmp_path: Path) -> None:
    boards = dashboards(FEATURES, BUSINESS)
    report = write_report(es, settings.namespace, boards, load_kibana_templates(),
                          tmp_path / "empty", time_range=(T0, T0 + 1))
    assert report.with_data == 0
    assert all(_is_png(r.image) for r in report.results)
    assert report.html.read_text().count("No data in") == len(report.results)
    assert report.summary().startswith(f"0/{len(report.results)} panels had data")


def test_terms_panels_match_template_keyword_fields() -> None:
    """Sanity of the seeded shape: every terms split names a mapped field."""
    templates = load_kibana_templates()
    for board in dashboards(FEATURES, BUSINESS):
        for p in board.panels:
            for b in p.nesting():
                if isinstance(b, Terms):
                    props = templates[p.index]["template"]["mappings"]["properties"]
                    assert b.field in props, (p.id, b.field)
