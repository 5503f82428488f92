"""Training pipeline on a synthetic labelled frame: split, thresholds, determinism, registry.

Nothing here depends on the last bits of a BLAS or libm result: scores compared for
equality come from the same path on the same machine, and the threshold tests use scores
built with exactly rounded operations only.
"""

from __future__ import annotations

import numpy as np
import pytest
from precog.pipelines.train import (
    SCORE_RESOLUTION,
    LabeledFrame,
    choose_threshold,
    holdout_metrics,
    threshold_between,
    time_split,
    train_frame,
    train_models,
)

from precog.errors import ConfigError
from precog.models import decide, served_scores
from precog.registry import ModelRegistry, sha256_hex, training_data_sha256
from precog.settings import Settings
from precog.spec import SPEC_DIR, load_spec

pytestmark = pytest.mark.unit

SPEC = load_spec(SPEC_DIR / "transactions.yaml")
HOUR = 3_600_000


def synthetic_frame(n: int = 3000, seed: int = 5) -> LabeledFrame:
    """Rows in the spec's feature order; fraud is likelier for large online amounts."""
    rng = np.random.default_rng(seed)
    names = SPEC.feature_names
    X = np.abs(rng.normal(size=(n, len(names))))
    X[:, names.index("is_online")] = rng.integers(0, 2, n)
    X[:, names.index("new_merchant")] = rng.integers(0, 2, n)
    logit = (
        -4.0
        + 1.5 * X[:, names.index("log_amount")]
        + 1.2 * X[:, names.index("is_online")]
        + 1.0 * X[:, names.index("new_merchant")]
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    times = np.sort(rng.integers(0, 30 * 24 * HOUR, n)).astype(np.int64)
    return LabeledFrame(X, names, [f"e{i}" for i in range(n)], times, y)


def nudged(scores: np.ndarray, rng: np.random.Generator, most: int = 8) -> np.ndarray:
    """Every score moved by its own random number of ulps, up to ``most`` either way
    (what another BLAS kernel or libm build may do to a served score)."""
    out = scores.copy()
    steps = rng.integers(-most, most + 1, size=scores.size)
    for _ in range(most):
        out = np.where(steps > 0, np.nextafter(out, np.inf), out)
        out = np.where(steps < 0, np.nextafter(out, -np.inf), out)
        steps = steps - np.sign(steps)
    return out


def best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    """Brute force: the best F1 of flagging ``score >= c`` over every eligible cut ``c``."""
    distinct = np.unique(scores)
    best = 0.0
    for i, cut in enumerate(distinct):
        if i and cut - distinct[i - 1] < SCORE_RESOLUTION:
            continue
        flagged = scores >= cut
        tp = int((flagged & (y == 1)).sum())
        if tp:
            best = max(best, 2 * tp / (int(flagged.sum()) + int(y.sum())))
    return best


def exact_scores(n: int = 2000, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores made with exactly rounded operations only (equal on every CPU):
    distinct scores, exact ties (as tree models give) and pairs a few ulps apart."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n) ** 2
    scores[: n // 10] = np.round(scores[: n // 10], 2)  # exact ties
    pairs = slice(n // 10, n // 5, 2)
    scores[n // 10 + 1 : n // 5 + 1 : 2] = np.nextafter(scores[pairs], 1.0)  # 1 ulp apart
    y = (rng.random(n) < scores).astype(np.int64)
    return y, scores


def test_time_split_holds_out_the_last_fifth_of_event_time():
    frame = synthetic_frame()
    holdout = time_split(frame.event_times, 0.2)
    cut = frame.event_times.min() + 0.8 * (frame.event_times.max() - frame.event_times.min())
    assert frame.event_times[holdout].min() >= cut > frame.event_times[~holdout].max()
    assert 0.17 < holdout.mean() < 0.23
    with pytest.raises(ConfigError, match="between 0 and 1"):
        time_split(frame.event_times, 1.0)


def test_threshold_maximises_f1_on_a_known_case():
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    s = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.75, 0.9])
    # threshold: (TP, FP) precision recall F1
    # .05 (4,4) .5 1 .667 | .1 (4,3) .571 1 .727 | .2 (4,2) .667 1 .8 | .3 (3,2) .6 .75 .667
    # .5 (3,1) .75 .75 .75 | .7 (2,1) .667 .5 .571 | .75 (1,1) .5 .25 .333 | .9 (1,0) 1 .25 .4
    # the threshold is the shortest decimal in the middle half of the gap below the cut
    assert choose_threshold(y, s) == (0.15, "max-f1")  # cut .2, between .1 and .2
    assert choose_threshold(y, s, 0.7) == (0.4, "max-recall@precision>=0.7")  # cut .5
    assert choose_threshold(y, s, 0.99) == (0.8, "max-recall@precision>=0.99")  # cut .9
    assert choose_threshold(y, s, 0.6) == (0.15, "max-recall@precision>=0.6")  # cut .2
    assert decide(s, 0.15).tolist() == (s >= 0.2).tolist()


def test_threshold_ties_go_to_the_higher_threshold():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # cut .7: p=2/3 r=1 f1=.8 ; .9: p=1 r=.5 f1=.667 ; .8: p=.5 r=.5 -> max is .7 alone
    assert choose_threshold(y, s)[0] == 0.4  # between .1 and .7
    # cut .9: p=1 r=.5 f1=2/3 ; .8: .5 ; .7: .4 ; .6: p=.5 r=1 f1=2/3 -> tie, take .9
    y2, s2 = np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6])
    assert choose_threshold(y2, s2)[0] == 0.85


def test_threshold_never_separates_scores_closer_than_the_resolution():
    below = np.nextafter(0.5, 0.0)  # 1 ulp under 0.5
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, below, 0.5, 0.9])
    # the cut at .5 (F1 1.0) depends on 1 ulp: not eligible. Cut `below`: p=2/3 r=1 f1=.8
    assert choose_threshold(y, s) == (0.3, "max-f1")
    assert holdout_metrics(y, s, 0.3).f1 == 0.8
    # the lowest cut (flag everything) sits between 0 and the lowest score
    assert choose_threshold(np.array([1, 1, 0]), np.array([0.3, 0.6, 0.4]))[0] == 0.1
    assert threshold_between(0.0, 0.0) == 0.0


def test_threshold_is_the_best_eligible_cut_and_no_score_sits_near_it():
    y, s = exact_scores()
    threshold, policy = choose_threshold(y, s)
    assert policy == "max-f1"
    assert holdout_metrics(y, s, threshold).f1 == pytest.approx(best_f1(y, s), rel=1e-12)
    below, above = s[s < threshold].max(), s[s >= threshold].min()
    assert above - below >= SCORE_RESOLUTION
    assert min(threshold - below, above - threshold) >= (above - below) / 4 * (1 - 1e-12)


def test_threshold_labels_and_metrics_ignore_last_bit_differences():
    """Issue 12: a 1-ulp difference in a served score flipped a label at a threshold that
    was a holdout score. Now no score change of a few ulps changes anything recorded."""
    y, s = exact_scores()
    rng = np.random.default_rng(0)
    for target in (None, 0.5):
        threshold, policy = choose_threshold(y, s, target)
        metrics = holdout_metrics(y, s, threshold)
        for _ in range(20):
            moved = nudged(s, rng)
            assert (moved != s).any()
            assert choose_threshold(y, moved, target) == (threshold, policy)
            assert decide(moved, threshold).tolist() == decide(s, threshold).tolist()
            assert holdout_metrics(y, moved, threshold) == metrics


def test_holdout_metrics_at_threshold():
    m = holdout_metrics(np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.3, 0.2, 0.1]), 0.5)
    assert (m.precision, m.recall, m.f1, m.positive_rate, m.label_rate) == (0.5, 0.5, 0.5, 0.4, 0.4)
    assert m.roc_auc == pytest.approx(5 / 6)


def test_training_is_deterministic_and_loaded_models_match():
    frame = synthetic_frame()
    first = train_models(SPEC, frame, 0.2, seed=7, code="test")
    second = train_models(SPEC, frame, 0.2, seed=7, code="test")
    assert [t.model_spec.model_id for t in first] == ["fraud-lgbm", "fraud-logreg"]
    assert [sha256_hex(t.artifact) for t in first] == [sha256_hex(t.artifact) for t in second]
    other_seed = train_models(SPEC, frame, 0.2, seed=8, code="test")
    assert sha256_hex(other_seed[0].artifact) != sha256_hex(first[0].artifact)


def test_train_frame_registers_every_model(tmp_path):
    settings = Settings(registry_dir=tmp_path / "reg", code_version="c0ffee")
    frame = synthetic_frame()
    metas = train_frame(settings, SPEC, frame, 0.2, seed=1)
    assert [(m.model_id, m.version, m.artifact_format) for m in metas] == [
        ("fraud-lgbm", 1, "lightgbm-text"),
        ("fraud-logreg", 1, "skops"),
    ]
    holdout = time_split(frame.event_times, 0.2)
    lgbm, logreg = metas
    assert lgbm.features == SPEC.feature_names
    assert logreg.features == SPEC.model_features(SPEC.model("fraud-logreg"))
    assert lgbm.training_rows == int((~holdout).sum()) and lgbm.holdout_rows == int(holdout.sum())
    assert lgbm.training_window_start == int(frame.event_times[0])
    assert lgbm.training_window_end == int(frame.event_times[~holdout].max())
    assert lgbm.holdout_start == int(frame.event_times[holdout].min())
    assert lgbm.holdout_end == int(frame.event_times[-1])
    assert lgbm.code_version == "c0ffee" and lgbm.spec == "transactions"
    assert lgbm.training_data_sha256 == training_data_sha256(
        lgbm.features, frame.X[~holdout], frame.y[~holdout]
    )
    assert lgbm.holdout.roc_auc > 0.7 and logreg.holdout.roc_auc > 0.7
    assert set(lgbm.reference.features) == set(lgbm.features)
    assert sum(lgbm.reference.score.shares) == pytest.approx(1.0)

    # the registered artifacts, scored as the worker scores them (same path, same
    # machine), give exactly the recorded metrics; the threshold is the best F1 cut and
    # no holdout score is within a few ulps of it, so another CPU's last bits change nothing
    registry = ModelRegistry(settings.registry_dir)
    rng = np.random.default_rng(0)
    y = frame.y[holdout]
    for meta in metas:
        model = registry.load(meta.model_id, meta.version)
        scores = served_scores(model, frame.X[holdout], frame.names)
        assert holdout_metrics(y, scores, model.threshold) == meta.holdout
        assert meta.threshold_policy == "max-f1"
        assert meta.holdout.f1 == pytest.approx(best_f1(y, scores), rel=1e-12)
        assert np.abs(scores - model.threshold).min() > SCORE_RESOLUTION / 4
        assert holdout_metrics(y, nudged(scores, rng), model.threshold) == meta.holdout


def test_single_class_holdout_is_a_clear_error():
    frame = synthetic_frame(n=400)
    y = frame.y.copy()
    y[time_split(frame.event_times, 0.2)] = 0
    bad = LabeledFrame(frame.X, frame.names, frame.event_ids, frame.event_times, y)
    with pytest.raises(ConfigError, match=r"the holdout part has \d+ events with labels \[0\]"):
        train_models(SPEC, bad, 0.2, seed=0, code="x")
