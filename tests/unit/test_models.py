"""Model runtimes: safe formats only, exact predictions, canonical skops bytes.

Bit-for-bit comparisons are between the same computation path on the same machine;
a comparison with scikit-learn's own (BLAS) ``predict_proba`` is only up to rounding.
"""

from __future__ import annotations

import io
import operator
import pickle  # noqa: S403 - only to prove pickles are refused; never loaded
import zipfile

import lightgbm as lgb
import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from precog.errors import ModelError, UnsafeArtifactError
from precog.models import (
    LightGBMRuntime,
    LoadedModel,
    SkopsRuntime,
    canonical_skops,
    decide,
    dump_lightgbm,
    dump_skops,
    load_runtime,
    served_scores,
)
from precog.registry import HoldoutMetrics, ModelRegistry
from precog.scoring import make_model_set, score_batch

pytestmark = pytest.mark.unit


def _data(n: int = 600, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0.8).astype(np.int64)
    return X, y


def _booster(X: np.ndarray, y: np.ndarray) -> lgb.Booster:
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0,
              "deterministic": True, "num_threads": 1, "force_row_wise": True}
    ds = lgb.Dataset(X, y, feature_name=["a", "b", "c", "d"])
    return lgb.train(params, ds, num_boost_round=20)


def _logistic(X: np.ndarray, y: np.ndarray) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)


def test_lightgbm_text_round_trip_predicts_exactly():
    X, y = _data()
    booster = _booster(X, y)
    runtime = LightGBMRuntime.loads(dump_lightgbm(booster))
    out = runtime.predict_proba(X)
    assert out.dtype == np.float64 and out.shape == (len(X),)
    np.testing.assert_array_equal(out, booster.predict(X))
    assert runtime.feature_names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "make",
    [
        _logistic,
        lambda X, y: HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, y),
        lambda X, y: RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
    ],
    ids=["logistic", "hgb", "forest"],
)
def test_skops_round_trip_predicts_exactly(make):
    X, y = _data()
    est = make(X, y)
    runtime = SkopsRuntime.loads(dump_skops(est))
    np.testing.assert_array_equal(runtime.predict_proba(X), SkopsRuntime(est).predict_proba(X))
    # linear models are scored batch-invariantly (see _linear_proba): sklearn up to rounding
    np.testing.assert_allclose(runtime.predict_proba(X), est.predict_proba(X)[:, 1],
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False)])
def test_the_scaler_shortcut_gives_scikit_learns_bits(with_mean, with_std):
    from precog.models import _transform

    X, _ = _data(n=300, seed=11)
    X[::7, 2] = np.nan  # passes through, as scikit-learn lets it
    scaler = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X * 3.7 + 1.1)
    for rows in (X, X[:1], X[5:6]):
        got = _transform(scaler, rows)
        want = scaler.transform(rows)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_input_the_scaler_refuses_still_reaches_scikit_learn():
    from precog.models import _transform

    X, _ = _data(n=50)
    scaler = StandardScaler().fit(X)
    bad = X[:2].copy()
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        _transform(scaler, bad)
    with pytest.raises(ValueError, match="features"):
        _transform(scaler, X[:, :3])


def test_canonical_skops_bytes_depend_only_on_the_model():
    X, y = _data()
    first = dump_skops(_logistic(X, y))
    second = dump_skops(_logistic(X, y))  # a new object: new Python ids, new timestamps
    assert first == second
    raw = sio.dumps(_logistic(X, y))
    assert raw != first and canonical_skops(raw) == first
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert names[-1] == "schema.json"
    assert all(n.endswith(".npy") and int(n[:-4]) < 100 for n in names[:-1])  # renumbered


def test_pickle_is_refused_by_both_runtimes(tmp_path):
    X, y = _data()
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_logistic(X, y)))
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        SkopsRuntime.load(path)
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        LightGBMRuntime.load(path)


def test_skops_with_an_untrusted_type_is_refused():
    X, y = _data()
    est = Pipeline([("f", FunctionTransformer(operator.neg)), ("clf", LogisticRegression())])
    data = sio.dumps(est.fit(X, y))
    assert "_operator.neg" in sio.get_untrusted_types(data=data)
    with pytest.raises(UnsafeArtifactError, match=r"untrusted types \['_operator.neg'"):
        SkopsRuntime.loads(data)


def test_unknown_format_and_garbage_are_refused():
    with pytest.raises(UnsafeArtifactError, match="unsupported artifact format 'joblib'"):
        load_runtime("joblib", b"tree\n")
    with pytest.raises(UnsafeArtifactError, match="not a skops artifact"):
        SkopsRuntime.loads(b"hello")
    with pytest.raises(ModelError, match="not a valid LightGBM text model"):
        LightGBMRuntime.loads(b"tree\nnonsense")


def test_decide_flags_at_and_above_threshold():
    assert decide(np.array([0.29, 0.3, 0.31]), 0.3).tolist() == [0, 1, 1]


#: The four algorithms of docs/models.md, fitted on the columns a, b, c, d.
ALGORITHMS = {
    "lightgbm": lambda X, y: dump_lightgbm(_booster(X, y)),
    "sklearn-logistic": lambda X, y: dump_skops(_logistic(X, y)),
    "sklearn-hgb": lambda X, y: dump_skops(
        HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, y)),
    "sklearn-random-forest": lambda X, y: dump_skops(
        RandomForestClassifier(n_estimators=5, random_state=0, n_jobs=1).fit(X, y)),
}
#: The spec's feature vector the worker builds: another order, and a column no model reads.
SPEC_NAMES = ["d", "extra", "b", "a", "c"]


def _registered(tmp_path, algorithm: str) -> tuple[LoadedModel, np.ndarray]:
    """A model registered and loaded as the worker loads it, and a spec-ordered batch."""
    X, y = _data()
    registry = ModelRegistry(tmp_path / "registry")
    metrics = HoldoutMetrics(precision=0.5, recall=0.5, f1=0.5, roc_auc=0.8, log_loss=0.4,
                             positive_rate=0.3, label_rate=0.3)
    meta = registry.register(
        "m", algorithm, ALGORITHMS[algorithm](X, y), spec="transactions",
        features=["a", "b", "c", "d"], threshold=0.5, training_window_start=0,
        training_window_end=1, training_rows=len(X), training_data_sha256="0" * 64,
        holdout_start=2, holdout_end=3, holdout_rows=len(X), holdout=metrics,
        code_version="test",
    )
    spec_X = np.column_stack([X[:, 3], np.ones(len(X)), X[:, 1], X[:, 0], X[:, 2]])
    return registry.load(meta.model_id, meta.version), spec_X


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_served_scores_are_the_workers_scores_bit_for_bit(tmp_path, algorithm):
    model, spec_X = _registered(tmp_path, algorithm)
    worker = score_batch(make_model_set(1, model, [], SPEC_NAMES), spec_X)[0]
    served = served_scores(model, spec_X, SPEC_NAMES)
    assert served.dtype == np.float64 and served.shape == (len(spec_X),)
    np.testing.assert_array_equal(served, worker)
    # the model's own columns, in its order, from any layout: the same bits
    own = spec_X[:, [3, 2, 4, 0]]
    np.testing.assert_array_equal(served_scores(model, own), worker)
    np.testing.assert_array_equal(served_scores(model, np.asfortranarray(own)), worker)
    np.testing.assert_array_equal(served_scores(model.runtime, own), worker)
    # columns in another order (here the spec's) score differently; by name they are right
    assert not np.array_equal(served_scores(model, spec_X[:, [0, 2, 3, 4]]), worker)
    with pytest.raises(ModelError, match=r"needs features X does not have: \['d'\]"):
        served_scores(model, spec_X[:, 1:], SPEC_NAMES[1:])
    with pytest.raises(ModelError, match="expects 4 features, got 5 columns"):
        served_scores(model, spec_X)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_rows_served_score_does_not_depend_on_its_batch(tmp_path, algorithm):
    """Replays and redeliveries batch differently: the same row must get the same score."""
    model, spec_X = _registered(tmp_path, algorithm)
    whole = served_scores(model, spec_X, SPEC_NAMES)
    singles = np.concatenate(
        [served_scores(model, spec_X[i : i + 1], SPEC_NAMES) for i in range(len(spec_X))])
    pieces = np.concatenate(
        [served_scores(model, spec_X[i : i + 37], SPEC_NAMES) for i in range(0, len(spec_X), 37)])
    np.testing.assert_array_equal(singles, whole)
    np.testing.assert_array_equal(pieces, whole)
    np.testing.assert_array_equal(served_scores(model, spec_X[::-1], SPEC_NAMES), whole[::-1])


def test_served_scores_need_a_loaded_model_to_pick_columns_by_name():
    X, y = _data()
    runtime = SkopsRuntime.loads(dump_skops(_logistic(X, y)))
    with pytest.raises(ModelError, match="feature_names needs a LoadedModel"):
        served_scores(runtime, X, ["a", "b", "c", "d"])
