"""Drift detectors on seeded streams, with exact detection points."""

from __future__ import annotations

import numpy as np
import pytest

from precog.avro import Codec
from precog.monitor.drift import ConceptDrift, PSIDrift, psi
from precog.monitor.monitor import Monitor, MonitorConfig
from precog.monitor.outliers import OutlierDetector
from precog.monitor.reference import SCORE, FeatureReference, Reference

pytestmark = pytest.mark.unit

N = 6000
K = 3000  # where the error rate jumps
SEED = 42
#: the stated detection delay (docs/monitoring.md): a 0.10 -> 0.30 error-rate jump is
#: detected by ADWIN (delta 0.002, clock 32) within 256 labels
MAX_DELAY = 256


def labeled_stream(seed: int, drift: bool) -> list[dict]:
    """(score, decision, outcome) pairs whose error rate is 0.10, or 0.30 from index K."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.2).astype(int)
    rate = np.where(np.arange(N) >= K, 0.3 if drift else 0.1, 0.1)
    wrong = rng.random(N) < rate
    decision = np.where(wrong, 1 - y, y)
    score = np.clip(np.where(decision == 1, 0.7, 0.3) + rng.normal(0, 0.1, N), 0.01, 0.99)
    return [{"model_id": "lead", "version": 4, "role": "leader", "score": float(score[i]),
             "label": int(decision[i]), "outcome": int(y[i]), "event_time": i * 1000,
             "outcome_time": i * 1000 + 500, "label_latency_ms": 500} for i in range(N)]


def test_concept_drift_is_detected_at_the_exact_label_within_the_stated_delay():
    cd = ConceptDrift()
    hits = [h for r in labeled_stream(SEED, drift=True)
            if (h := cd.update(int(r["label"] != r["outcome"])))]
    assert [h.index for h in hits] == [3167]
    assert 0 < hits[0].index - K <= MAX_DELAY
    assert hits[0].error_before < 0.15 < hits[0].error_after


def test_no_concept_drift_on_a_stream_without_drift_of_the_same_length_and_seed():
    cd = ConceptDrift()
    assert [h for r in labeled_stream(SEED, drift=False)
            if (h := cd.update(int(r["label"] != r["outcome"])))] == []


def test_monitor_raises_one_concept_drift_alert_with_its_evidence():
    for drift, expected in ((True, 1), (False, 0)):
        mon = Monitor(MonitorConfig("t"))
        for r in labeled_stream(SEED, drift):
            mon.on_labeled(r)
        alerts = [a for a in mon.tick(now=10).alerts if a["detector"] == "ADWIN"]
        assert len(alerts) == expected
    a = Monitor(MonitorConfig("t"))
    for r in labeled_stream(SEED, True):
        a.on_labeled(r)
    alert = next(x for x in a.tick(now=10).alerts if x["detector"] == "ADWIN")
    assert (alert["kind"], alert["detector"], alert["model_id"], alert["version"],
            alert["window"], alert["threshold"]) == ("concept_drift", "ADWIN", "lead", 4,
                                                     "labels#3167", 0.002)
    assert alert["event_time"] == 3167 * 1000 + 500
    codec = Codec.for_schema("alert")
    assert codec.decode(codec.encode(alert)) == alert


FEATURES = ["amount", "count_1h", "is_online"]


def _training(seed: int, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.lognormal(3, 1, n), rng.poisson(2, n).astype(float),
                            (rng.random(n) < 0.3).astype(float)])


def _predictions(seed: int, n: int, shift_from: int):
    rng = np.random.default_rng(seed)
    X = _training(seed + 1, n)
    X[shift_from:, 1] += rng.poisson(2, n - shift_from)  # count_1h shifts: more activity
    for i, x in enumerate(X):
        s = float(rng.random())
        yield {"prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": "c",
               "source": "transactions", "event_time": i * 10, "scored_time": i * 10 + 1,
               "leader": {"model_id": "lead", "version": 1, "role": "leader", "score": s,
                          "label": int(s > 0.5), "threshold": 0.5, "artifact_sha256": "x"},
               "challengers": [],
               "features": [{"name": n, "value": float(v), "age_ms": 0}
                            for n, v in zip(FEATURES, x, strict=True)]}


def test_data_drift_on_one_feature_alerts_for_that_feature_only():
    ref = Reference.from_matrix(_training(1), FEATURES)
    mon = Monitor(MonitorConfig("t", psi_window=1000), references=lambda m, v: ref)
    alerts = []
    for p in _predictions(5, 6000, shift_from=3000):
        mon.on_prediction(p)
    alerts = [a for a in mon.tick(now=1).alerts if a["kind"] == "data_drift"]
    assert [(a["feature"], a["window"]) for a in alerts] == [
        ("count_1h", "events#3x1000"), ("count_1h", "events#4x1000"),
        ("count_1h", "events#5x1000")]
    assert all(a["statistic"] > a["threshold"] == 0.2 for a in alerts)
    assert alerts[0]["model_id"] == "lead" and alerts[0]["source"] == "transactions"


def test_no_data_drift_without_a_shift():
    ref = Reference.from_matrix(_training(1), FEATURES)
    mon = Monitor(MonitorConfig("t", psi_window=1000), references=lambda m, v: ref)
    for p in _predictions(5, 6000, shift_from=6000):
        mon.on_prediction(p)
    assert [a for a in mon.tick(now=1).alerts if a["kind"] == "data_drift"] == []


def test_prediction_drift_against_the_training_score_reference():
    rng = np.random.default_rng(3)
    train_scores = rng.beta(1, 8, 20_000)
    ref = Reference({SCORE: FeatureReference.from_values(SCORE, train_scores)})
    d = PSIDrift({SCORE: ref[SCORE]}, window=500, names=[SCORE])
    live = np.concatenate([rng.beta(1, 8, 1500), rng.beta(2, 5, 1000)])
    res = [r for i, s in enumerate(live) for r in d.update({SCORE: s}, i)]
    assert [r.drifted for r in res] == [False, False, False, True, True]


def test_prediction_drift_without_a_reference_learns_it_from_the_first_window():
    rng = np.random.default_rng(4)
    d = PSIDrift(None, window=500, names=[SCORE])
    live = np.concatenate([rng.beta(1, 8, 1500), rng.beta(2, 5, 1000)])
    res = [r for i, s in enumerate(live) for r in d.update({SCORE: s}, i)]
    assert [(r.window_index, r.drifted) for r in res] == [(1, False), (2, False), (3, True),
                                                          (4, True)]


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift():
    shares = (0.25, 0.25, 0.25, 0.25)
    assert psi(shares, [25, 25, 25, 25]) == 0.0
    assert 0 < psi(shares, [30, 25, 25, 20]) < psi(shares, [60, 20, 10, 10])
    assert psi(shares, [0, 0, 0, 0]) == 0.0


def test_outliers_per_feature_and_multivariate():
    ref = Reference.from_matrix(_training(1), FEATURES)
    det = OutlierDetector(ref, seed=11)
    normal = det.score({"amount": 20.0, "count_1h": 2.0, "is_online": 0.0})
    assert not normal.outlier and normal.features == ()
    far = det.score({"amount": 1e6, "count_1h": 2.0, "is_online": 0.0})
    assert far.outlier and far.features == ("amount",)
    rates = [det.score(dict(zip(FEATURES, x, strict=True))).outlier for x in _training(9, 3000)]
    assert sum(rates) / len(rates) < 0.02  # in-distribution events are rarely flagged


def test_reference_round_trips_and_bins_in_log_time():
    ref = Reference.from_matrix(_training(1), FEATURES, bins=10)
    assert Reference.from_dict(ref.to_dict()) == ref
    amount = ref["amount"]
    assert amount.n_bins == 10 and abs(sum(amount.shares) - 1.0) < 1e-12
    assert ref["is_online"].edges == (0.0, 0.5, 1.0)
    assert amount.bin_of(amount.min - 1) == 0 and amount.bin_of(amount.max + 1) == 9


def test_reference_from_the_registry_bins_like_the_registry():
    from precog.registry import TrainingReference, bin_shares, distribution_reference

    X = _training(1)
    scores = np.random.default_rng(2).beta(1, 6, 5000)
    training = TrainingReference(
        features={n: distribution_reference(X[:, j]) for j, n in enumerate(FEATURES)},
        score=distribution_reference(scores))
    ref = Reference.from_training(training)
    assert set(ref.names) == {*FEATURES, SCORE}
    live = _training(7, 4000)
    for j, n in enumerate(FEATURES):
        counts = np.bincount([ref[n].bin_of(v) for v in live[:, j]], minlength=ref[n].n_bins)
        want = bin_shares(training.features[n].edges, live[:, j])
        assert np.array_equal(counts / len(live), want), n
    # data drift on one feature, with the registry's reference
    mon = Monitor(MonitorConfig("t", psi_window=1000, outliers=True), references=lambda m, v: ref)
    outliers = 0
    for p in _predictions(5, 6000, shift_from=3000):
        res = mon.on_prediction(p)
        outliers += bool(res and res.outlier)
    alerts = mon.tick(now=1).alerts
    assert {a["feature"] for a in alerts if a["kind"] == "data_drift"} == {"count_1h"}
    assert outliers < 6000 * 0.05


def test_a_psi_window_spans_its_earliest_to_latest_event_time_whatever_the_arrival_order():
    rng = np.random.default_rng(5)
    ref = Reference({SCORE: FeatureReference.from_values(SCORE, rng.beta(1, 8, 5000))})
    d = PSIDrift({SCORE: ref[SCORE]}, window=4, names=[SCORE])
    times = [300, 100, 400, 200]  # partitions interleave: not in event-time order
    res = [r for t in times for r in d.update({SCORE: 0.1}, t)]
    assert [(r.first_time, r.last_time) for r in res] == [(100, 400)]


def test_a_concept_drift_alert_id_comes_from_the_label_not_from_the_label_count():
    """After a restart the label count starts again: the same label firing keeps its id,
    another label at the same count gets another id."""
    from precog.monitor.drift import ConceptDriftDetection, concept_drift_alert

    def alert(index: int, event_id: str) -> dict:
        det = ConceptDriftDetection(index, 0.1, 0.3, 500)
        return concept_drift_alert("t", "m", 1, det, 0.002, 5, 6, event_id=event_id)

    assert alert(3167, "e-9")["alert_id"] == alert(12, "e-9")["alert_id"]
    assert alert(3167, "e-9")["alert_id"] != alert(3167, "e-10")["alert_id"]
    assert alert(3167, "e-9")["window"] == "labels#3167"
