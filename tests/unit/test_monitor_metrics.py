"""Online metrics equal scikit-learn's offline recomputation from the same pairs.

Arrival in any order: tests/unit/test_monitor_windows.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from precog.avro import Codec
from precog.monitor.join import JoinState
from precog.monitor.metrics import ExactROCAUC, MetricsBook

pytestmark = pytest.mark.unit

WINDOW = 10_000
LAST_N = 300
LAST_MS = 20_000


def _stream(seed: int, n: int):
    """Predictions and outcomes, with duplicate, late and missing outcomes mixed in."""
    rng = np.random.default_rng(seed)
    preds, outs = [], []
    for i in range(n):
        t = i * 100
        y = int(rng.random() < 0.3)
        # rounded scores make ties, the hard case for ROC AUC
        s = float(np.clip(np.round(rng.beta(2 + 3 * y, 4 - 2 * y), 2), 0.001, 0.999))
        c = float(np.round(rng.random(), 3))
        preds.append({
            "prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": "c", "source": "tx",
            "event_time": t, "scored_time": t + 1, "features": [],
            "leader": {"model_id": "lead", "version": 1, "role": "leader", "score": s,
                       "label": int(s >= 0.5), "threshold": 0.5, "artifact_sha256": "x"},
            "challengers": [{"model_id": "chal", "version": 3, "role": "challenger",
                             "score": c, "label": int(c >= 0.4), "threshold": 0.4,
                             "artifact_sha256": "y"}],
        })
        kind = rng.random()
        delay = int(rng.integers(50, WINDOW))
        if kind < 0.05:
            continue  # never labelled
        if kind < 0.10:
            delay = WINDOW + int(rng.integers(1, 5000))  # late
        outs.append({"event_id": f"e{i}", "label": y, "event_time": t, "outcome_time": t + delay})
        if kind > 0.93:  # duplicate, possibly with a different label
            outs.append({"event_id": f"e{i}", "label": 1 - y, "event_time": t,
                         "outcome_time": t + delay + 7})
    return preds, outs


def _run(seed: int = 3, n: int = 3000):
    preds, outs = _stream(seed, n)
    # interleave by time: predictions at event time, outcomes at outcome time
    timeline = sorted([(p["event_time"], 0, p) for p in preds] +
                      [(o["outcome_time"], 1, o) for o in outs], key=lambda x: (x[0], x[1]))
    join, book, labeled = JoinState(WINDOW), MetricsBook(LAST_N, LAST_MS), []
    for _, kind, rec in timeline:
        if kind == 0:
            book.observe_prediction(rec)
            out = join.on_prediction(rec)
        else:
            out = join.on_outcome(rec)
        for r in out.labeled:
            book.observe_labeled(r)
            labeled.append(r)
        join.expire()
    return join, book, labeled


def _expected(pairs: list[dict]) -> dict:
    y = np.array([p["outcome"] for p in pairs])
    d = np.array([p["label"] for p in pairs])
    s = np.array([p["score"] for p in pairs])
    lat = np.array([p["label_latency_ms"] for p in pairs])
    return {
        "accuracy": skm.accuracy_score(y, d),
        "precision": skm.precision_score(y, d),
        "recall": skm.recall_score(y, d),
        "f1": skm.f1_score(y, d),
        "roc_auc": skm.roc_auc_score(y, s),
        "log_loss": skm.log_loss(y, s, labels=[0, 1]),
        "n_labels": len(pairs),
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
    }


def _check(rec: dict, exp: dict, exact_latency: bool = True) -> None:
    assert rec["n_labels"] == exp["n_labels"]
    for k in ("accuracy", "precision", "recall", "f1"):
        assert rec[k] == exp[k], k
    assert abs(rec["roc_auc"] - exp["roc_auc"]) < 1e-9
    assert abs(rec["log_loss"] - exp["log_loss"]) < 1e-9
    if exact_latency:
        assert rec["label_latency_p50_ms"] == pytest.approx(exp["p50"], abs=1e-9)
        assert rec["label_latency_p95_ms"] == pytest.approx(exp["p95"], abs=1e-9)


def test_metrics_equal_sklearn_for_every_model_and_window():
    join, book, labeled = _run()
    snap = {(r["model_id"], r["window"]): r for r in book.snapshot("t", 123)}
    assert sorted(snap) == [("chal", "cumulative"), ("chal", "last_20s"), ("chal", "last_300"),
                            ("lead", "cumulative"), ("lead", "last_20s"), ("lead", "last_300")]
    for model in ("lead", "chal"):
        pairs = [r for r in labeled if r["model_id"] == model]
        _check(snap[(model, "cumulative")], _expected(pairs), exact_latency=False)
        by_time = sorted(pairs, key=lambda p: (p["outcome_time"], p["event_id"],
                                               p["prediction_id"]))
        _check(snap[(model, f"last_{LAST_N}")], _expected(by_time[-LAST_N:]))
        newest = max(p["outcome_time"] for p in pairs)
        recent = [p for p in pairs if p["outcome_time"] > newest - LAST_MS]
        _check(snap[(model, "last_20s")], _expected(recent))
    lead = snap[("lead", "cumulative")]
    assert lead["label_coverage"] == len([r for r in labeled if r["model_id"] == "lead"]) / 3000
    assert lead["event_time"] == max(r["outcome_time"] for r in labeled)
    assert lead["computed_time"] == 123 and lead["version"] == 1 and lead["role"] == "leader"


def test_duplicate_and_late_outcomes_do_not_change_the_metrics():
    join, book, labeled = _run()
    c = join.counters
    assert c.duplicate_outcomes > 0 and c.late_outcomes > 0 and c.expired_unlabeled > 0
    # every event is joined once, and only within its window
    ids = [r["event_id"] for r in labeled if r["model_id"] == "lead"]
    assert len(ids) == len(set(ids)) == c.joined_events
    assert all(r["label_latency_ms"] <= WINDOW for r in labeled)
    # the same pairs, with no duplicate or late outcome at all, give the same numbers
    clean = MetricsBook(LAST_N, LAST_MS)
    for r in labeled:
        clean.observe_labeled(r)
    got = [{k: v for k, v in r.items() if k != "label_coverage"} for r in book.snapshot("t", 1)]
    want = [{k: v for k, v in r.items() if k != "label_coverage"} for r in clean.snapshot("t", 1)]
    assert got == want


def test_snapshot_records_match_the_metrics_schema():
    _, book, _ = _run(n=500)
    codec = Codec.for_schema("metrics")
    for rec in book.snapshot("t", 5):
        assert codec.decode(codec.encode(rec)) == rec


def test_undefined_metrics_are_null():
    book = MetricsBook(10, 1000)
    book.observe_labeled({"model_id": "m", "version": 1, "role": "leader", "score": 0.2,
                          "label": 0, "outcome": 0, "outcome_time": 5, "label_latency_ms": 5})
    rec = book.snapshot("t", 9)[0]
    assert rec["accuracy"] == 1.0 and rec["log_loss"] == pytest.approx(-np.log(0.8))
    assert (rec["precision"], rec["recall"], rec["f1"], rec["roc_auc"]) == (None,) * 4


def test_exact_auc_matches_sklearn_with_ties_and_reverts():
    rng = np.random.default_rng(9)
    y = (rng.random(2000) < 0.2).astype(int)
    s = np.round(rng.random(2000) * 0.5 + 0.3 * y, 2)
    auc = ExactROCAUC()
    for yi, si in zip(y, s, strict=True):
        auc.update(yi, si)
    assert abs(auc.get() - skm.roc_auc_score(y, s)) < 1e-12
    for yi, si in zip(y[:700], s[:700], strict=True):
        auc.revert(yi, si)
    assert abs(auc.get() - skm.roc_auc_score(y[700:], s[700:])) < 1e-12
