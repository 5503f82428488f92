"""Performance estimated from scores: near the realised metric if calibrated, else flagged."""

from __future__ import annotations

import numpy as np
import pytest

from precog.avro import Codec
from precog.monitor.estimate import (
    CalibrationWatch,
    EstimationBook,
    calibration,
    estimate_counts,
    realised_counts,
)
from precog.monitor.monitor import Monitor, MonitorConfig

pytestmark = pytest.mark.unit

#: the stated errors (docs/monitoring.md): on 5,000 events of calibrated scores (about 250
#: decided positive) the estimated F1 and recall are within 0.04 of the realised ones and
#: precision within 0.08 (200 seeds measured: max errors F1 0.037, recall 0.024, precision
#: 0.079; 95th percentiles 0.025, 0.018, 0.051)
MAX_ERROR = 0.04
MAX_PRECISION_ERROR = 0.08


def _calibrated(seed: int, n: int = 5000):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 3.0, n)
    return p, (rng.random(n) < p).astype(int)


def test_expected_counts_are_the_sums_of_the_probabilities():
    p = np.array([0.9, 0.6, 0.4, 0.1])
    c = estimate_counts(p, 0.5)
    assert (c.tp, c.fp, c.fn, c.tn) == pytest.approx((1.5, 0.5, 0.5, 1.5))
    r = realised_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert (r.tp, r.fp, r.fn, r.tn) == (1, 1, 1, 1)


@pytest.mark.parametrize("seed", range(20))
def test_calibrated_scores_estimate_the_realised_metrics_within_the_stated_error(seed):
    p, y = _calibrated(seed)
    e, r = estimate_counts(p, 0.5), realised_counts(p >= 0.5, y)
    assert abs(e.f1() - r.f1()) <= MAX_ERROR
    assert abs(e.precision() - r.precision()) <= MAX_PRECISION_ERROR
    assert abs(e.recall() - r.recall()) <= MAX_ERROR


def test_calibrated_scores_are_rarely_flagged():
    """Two tests at alpha 0.01 each: 3 of these 200 seeds are flagged (1.5%)."""
    flagged = sum(not calibration(*_calibrated(seed)).calibrated for seed in range(200))
    assert flagged <= 6


def test_overconfident_scores_are_flagged_and_their_estimate_is_off():
    flagged, errors = 0, []
    for seed in range(10):
        p, y = _calibrated(seed)
        s = np.sqrt(p)  # the same ranking, probabilities too high
        flagged += not calibration(s, y).calibrated
        errors.append(abs(estimate_counts(s, 0.5).precision()
                          - realised_counts(s >= 0.5, y).precision()))
    assert flagged == 10
    assert min(errors) > MAX_PRECISION_ERROR


def test_calibration_statistics_on_a_known_case():
    p = np.full(400, 0.5)
    y = np.r_[np.ones(300), np.zeros(100)]
    cal = calibration(p, y)
    # in the large: (300 - 200) / sqrt(400 * 0.25) = 10
    assert cal.in_the_large_z == pytest.approx(10.0)
    assert cal.ece == pytest.approx(0.25) and not cal.calibrated


def test_book_windows_estimate_at_once_and_realise_later():
    book = EstimationBook(window_ms=1000, keep_ms=10_000)
    p, y = _calibrated(3, 200)
    for i in range(200):
        book.observe_prediction("m", 1, "leader", 5000 + i, float(p[i]), 0.5)
    (est,) = book.records("ns", 1)
    assert (est["window"], est["event_time"], est["n_labels"]) == ("estimated_1s", 5000, 200)
    assert est["f1"] == pytest.approx(estimate_counts(p, 0.5).f1(), rel=1e-12)
    assert book.records("ns", 2) == []  # nothing changed
    for i in range(100):
        book.observe_labeled({"model_id": "m", "version": 1, "role": "leader",
                              "event_time": 5000 + i, "label": int(p[i] >= 0.5),
                              "outcome": int(y[i])})
    est2, real = book.records("ns", 3)
    assert real["window"] == "realised_1s" and real["n_labels"] == 100
    assert real["label_coverage"] == 0.5
    assert real["f1"] == realised_counts(p[:100] >= 0.5, y[:100]).f1()
    codec = Codec.for_schema("metrics")
    for rec in (est2, real):
        assert codec.decode(codec.encode(rec)) == rec
    book.observe_prediction("m", 1, "leader", 100_000, 0.5, 0.5)  # old windows expire
    assert {r["event_time"] for r in book.records("ns", 4, changed_only=False)} == {100_000}


def test_a_calibration_alert_is_raised_once_while_it_fails():
    watch = CalibrationWatch(last=1000, every=500, alpha=0.01)
    alerts = []
    for i in range(2000):
        rec = {"score": 0.9, "outcome": int(i % 2), "outcome_time": i}
        if (a := watch.observe("ns", ("m", 1), rec, 0)) is not None:
            alerts.append(a)
    assert len(alerts) == 1
    assert (alerts[0]["kind"], alerts[0]["detector"]) == ("concept_drift", "calibration")
    assert alerts[0]["window"] == "labels:500"


def test_the_monitor_publishes_estimates_with_its_metrics():
    mon = Monitor(MonitorConfig("t"))
    pred = {"event_time": 7_200_000, "source": "s", "features": [],
            "leader": {"model_id": "m", "version": 1, "role": "leader", "score": 0.8,
                       "label": 1, "threshold": 0.5},
            "challengers": []}
    mon.on_prediction(pred)
    windows = {r["window"] for r in mon.tick(now=1).metrics}
    assert "estimated_1h" in windows
