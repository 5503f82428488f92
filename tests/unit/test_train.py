"""Training pipeline on a synthetic labelled frame: split, thresholds, determinism, registry."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.train import (
    LabeledFrame,
    choose_threshold,
    holdout_metrics,
    time_split,
    train_frame,
    train_models,
)
from precog.errors import ConfigError
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
    assert choose_threshold(y, s) == (0.2, "max-f1")
    assert choose_threshold(y, s, 0.7) == (0.5, "max-recall@precision>=0.7")
    assert choose_threshold(y, s, 0.99) == (0.9, "max-recall@precision>=0.99")
    assert choose_threshold(y, s, 0.6) == (0.2, "max-recall@precision>=0.6")


def test_threshold_ties_go_to_the_higher_threshold():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # t=.7: p=2/3 r=1 f1=.8 ; t=.9: p=1 r=.5 f1=.667 ; t=.8: p=.5 r=.5 -> max is .7 alone
    assert choose_threshold(y, s)[0] == 0.7
    # t=.9: p=1 r=.5 f1=2/3 ; t=.8: .5 ; t=.7: .4 ; t=.6: p=.5 r=1 f1=2/3 -> tie, take .9
    y2, s2 = np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6])
    assert choose_threshold(y2, s2)[0] == 0.9


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

    # the registered artifacts score the holdout exactly as the metrics say
    registry = ModelRegistry(settings.registry_dir)
    for meta in metas:
        model = registry.load(meta.model_id, meta.version)
        cols = [frame.names.index(f) for f in model.features]
        scores = model.predict_proba(frame.X[holdout][:, cols])
        again = holdout_metrics(frame.y[holdout], scores, model.threshold)
        assert again == meta.holdout


def test_single_class_holdout_is_a_clear_error():
    frame = synthetic_frame(n=400)
    y = frame.y.copy()
    y[time_split(frame.event_times, 0.2)] = 0
    bad = LabeledFrame(frame.X, frame.names, frame.event_ids, frame.event_times, y)
    with pytest.raises(ConfigError, match=r"the holdout part has \d+ events with labels \[0\]"):
        train_models(SPEC, bad, 0.2, seed=0, code="x")
