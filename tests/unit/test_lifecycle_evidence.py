"""Paired evidence: weighted metrics equal scikit-learn's, the tests decide as they should."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, precision_recall_curve, roc_auc_score

from precog.errors import ConfigError
from precog.lifecycle.evidence import (
    MetricSpec,
    Predictions,
    compare,
    metric_value,
    metric_values,
)

pytestmark = pytest.mark.unit


def _data(seed: int, n: int = 2000, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    score = np.clip(0.3 * y + rng.normal(0.3, 0.2, n), 0.0, 1.0)
    if ties:
        score = np.round(score, 1)
    return y, score, (score >= 0.5).astype(np.int64)


def _precision_at_recall_sklearn(y, score, recall, weight=None):
    prec, rec, _ = precision_recall_curve(y, score, sample_weight=weight)
    # precision_recall_curve lists thresholds ascending; pick the highest threshold whose
    # recall reaches the target
    ok = np.flatnonzero(rec >= recall - 1e-12)
    return prec[ok[-1]]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_metrics_equal_sklearn(seed, ties):
    y, s, lab = _data(seed, ties=ties)
    assert metric_value(MetricSpec("f1"), y, s, lab) == pytest.approx(f1_score(y, lab), rel=1e-12)
    assert metric_value(MetricSpec("roc_auc"), y, s, lab) == pytest.approx(
        roc_auc_score(y, s), rel=1e-12)
    assert metric_value(MetricSpec("log_loss"), y, s, lab) == pytest.approx(
        log_loss(y, np.clip(s, 1e-15, 1 - 1e-15)), rel=1e-9)
    assert metric_value(MetricSpec("precision_at_recall", recall=0.8), y, s, lab) == \
        pytest.approx(_precision_at_recall_sklearn(y, s, 0.8), rel=1e-12)
    fp = int(np.sum((lab == 1) & (y == 0)))
    fn = int(np.sum((lab == 0) & (y == 1)))
    assert metric_value(MetricSpec("cost", cost_fp=1, cost_fn=10), y, s, lab) == \
        pytest.approx((fp + 10 * fn) / len(y), rel=1e-12)


@pytest.mark.parametrize("name", ["f1", "roc_auc", "log_loss", "precision_at_recall", "cost"])
def test_integer_weights_equal_repeated_events(name):
    """A bootstrap row weighs events by counts: the same as repeating them."""
    y, s, lab = _data(7, n=400, ties=True)
    w = np.random.default_rng(8).poisson(1.0, size=len(y))
    rep = np.repeat(np.arange(len(y)), w)
    m = MetricSpec(name)
    weighted = metric_values(m, y, s, lab, w[None, :])[0]
    assert weighted == pytest.approx(metric_value(m, y[rep], s[rep], lab[rep]), rel=1e-9)


def test_sklearn_sample_weights_agree_for_auc_and_f1():
    y, s, lab = _data(9, n=500)
    w = np.random.default_rng(10).poisson(1.0, size=len(y)).astype(float)
    rows = metric_values(MetricSpec("roc_auc"), y, s, lab, w[None, :])
    assert rows[0] == pytest.approx(roc_auc_score(y, s, sample_weight=w), rel=1e-12)
    rows = metric_values(MetricSpec("f1"), y, s, lab, w[None, :])
    assert rows[0] == pytest.approx(f1_score(y, lab, sample_weight=w), rel=1e-12)


def test_undefined_metrics_are_nan():
    y = np.zeros(5, np.int64)
    s = np.linspace(0, 1, 5)
    assert np.isnan(metric_value(MetricSpec("roc_auc"), y, s, s > 2))
    assert np.isnan(metric_value(MetricSpec("f1"), y, s, s > 2))


def test_unknown_metric_and_test_are_config_errors():
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        MetricSpec("acc")
    y, s, lab = _data(1, n=50)
    p = Predictions(s, lab)
    with pytest.raises(ConfigError, match="unknown test 'ttest'"):
        compare(MetricSpec(), y, p, p, test="ttest")


def _two_models(seed: int, n: int, edge: float):
    """Outcomes, a leader and a challenger whose scores separate the classes by ``edge`` more."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    base = rng.normal(0.0, 1.0, n)
    lead = 1 / (1 + np.exp(-(base + 1.0 * (2 * y - 1) - 1.0)))
    ch = 1 / (1 + np.exp(-(base + (1.0 + edge) * (2 * y - 1) - 1.0)))
    return y, Predictions(lead, (lead >= 0.5).astype(np.int64)), \
        Predictions(ch, (ch >= 0.5).astype(np.int64))


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar"])
def test_a_clearly_better_challenger_is_supported(test):
    y, lead, ch = _two_models(1, 4000, edge=0.6)
    c = compare(MetricSpec("f1"), y, lead, ch, test=test, margin=0.01, samples=400, seed=3)
    assert c.gain > 0.01
    assert c.supports(0.01, 0.05), c


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar"])
def test_the_same_model_is_never_supported(test):
    y, lead, _ = _two_models(2, 4000, edge=0.0)
    c = compare(MetricSpec("roc_auc"), y, lead, lead, test=test, samples=200, seed=1)
    assert c.gain == 0.0
    assert not c.supports(0.0, 0.05)


def test_a_worse_challenger_is_never_supported_for_lower_is_better_metrics():
    y, lead, ch = _two_models(3, 3000, edge=0.6)
    for name in ("log_loss", "cost"):
        c = compare(MetricSpec(name), y, ch, lead, samples=300, seed=2)  # swapped: worse
        assert c.gain < 0
        assert not c.supports(0.0, 0.05)


def test_bootstrap_is_reproducible_from_its_seed():
    y, lead, ch = _two_models(4, 1000, edge=0.2)
    a = compare(MetricSpec("f1"), y, lead, ch, samples=300, seed=11)
    b = compare(MetricSpec("f1"), y, lead, ch, samples=300, seed=11)
    assert a == b


def test_mcnemar_counts_discordant_pairs_exactly():
    y = np.array([1, 1, 0, 0, 1, 0])
    lead = Predictions(np.zeros(6), np.array([1, 0, 0, 1, 0, 0]))  # right on 0, 2, 5
    ch = Predictions(np.zeros(6), np.array([1, 1, 0, 0, 1, 1]))  # right on 0, 1, 2, 3, 4
    c = compare(MetricSpec("f1"), y, lead, ch, test="mcnemar")
    assert (c.leader_only_right, c.challenger_only_right) == (1, 3)
    assert c.p_value == pytest.approx(5 / 16)  # P(X >= 3), X ~ Bin(4, 1/2)
