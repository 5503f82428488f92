"""Model registry: versions, round trips, the sha256 check, safe formats, the ES document."""

from __future__ import annotations

import json
import pickle  # noqa: S403 - only to prove pickles are refused; never loaded
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from precog import resources
from precog.errors import ArtifactIntegrityError, ModelError, UnsafeArtifactError
from precog.models import SkopsRuntime, dump_lightgbm, dump_skops
from precog.registry import (
    HoldoutMetrics,
    ModelRegistry,
    code_version,
    distribution_reference,
    models_document,
    sha256_hex,
)
from precog.settings import Settings

pytestmark = pytest.mark.unit

FEATURES = ["a", "b", "c"]


def _data(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] - X[:, 2] + rng.normal(scale=0.4, size=n) > 0.5).astype(np.int64)
    return X, y


def _booster() -> lgb.Booster:
    X, y = _data()
    params = {"objective": "binary", "num_leaves": 5, "verbose": -1, "seed": 1,
              "deterministic": True, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=10)


def _fields(**over) -> dict:
    fields = dict(
        spec="transactions",
        features=FEATURES,
        threshold=0.42,
        training_window_start=1000,
        training_window_end=2000,
        training_rows=400,
        training_data_sha256="d" * 64,
        holdout_start=2001,
        holdout_end=3000,
        holdout_rows=100,
        holdout=HoldoutMetrics(precision=0.5, recall=0.25, f1=1 / 3, roc_auc=0.8,
                               log_loss=0.3, positive_rate=0.1, label_rate=0.2),
        code_version="abc1234",
        created_time=1_700_000_000_000,
    )
    fields.update(over)
    return fields


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_register_and_load_round_trip(registry):
    booster = _booster()
    data = dump_lightgbm(booster)
    meta = registry.register("fraud-lgbm", "lightgbm", data, **_fields())
    assert (meta.model_id, meta.version, meta.artifact_format) == ("fraud-lgbm", 1, "lightgbm-text")
    assert meta.artifact_path == "fraud-lgbm/1/model.txt"
    assert meta.artifact_sha256 == sha256_hex(data)
    assert (registry.root / "fraud-lgbm" / "1" / "model.txt").read_bytes() == data
    assert registry.get("fraud-lgbm", 1) == meta

    loaded = registry.load("fraud-lgbm", 1)
    X, _ = _data()
    np.testing.assert_array_equal(loaded.predict_proba(X), booster.predict(X))
    assert (loaded.model_id, loaded.version, loaded.threshold) == ("fraud-lgbm", 1, 0.42)
    assert loaded.features == FEATURES and loaded.metadata == meta
    assert loaded.artifact_sha256 == sha256_hex(data)


def test_skops_model_round_trip_is_exact(registry):
    X, y = _data()
    est = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(X, y)
    meta = registry.register("fraud-logreg", "sklearn-logistic", dump_skops(est), **_fields())
    assert meta.artifact_path == "fraud-logreg/1/model.skops" and meta.artifact_format == "skops"
    loaded = registry.load("fraud-logreg", 1)
    np.testing.assert_array_equal(loaded.predict_proba(X), SkopsRuntime(est).predict_proba(X))
    np.testing.assert_allclose(loaded.predict_proba(X), est.predict_proba(X)[:, 1],
                               rtol=1e-12, atol=1e-15)


def test_versions_number_one_two_three_per_model(registry):
    data = dump_lightgbm(_booster())
    got = [registry.register("m-a", "lightgbm", data, **_fields()).version for _ in range(3)]
    got.append(registry.register("m-b", "lightgbm", data, **_fields()).version)
    assert got == [1, 2, 3, 1]
    assert registry.versions("m-a") == [1, 2, 3] and registry.versions("nope") == []
    assert registry.model_ids() == ["m-a", "m-b"]
    assert [(m.model_id, m.version) for m in registry.list()] == [
        ("m-a", 1), ("m-a", 2), ("m-a", 3), ("m-b", 1)
    ]
    assert registry.latest("m-a").version == 3
    assert not list((registry.root / "m-a").glob(".tmp-*"))  # no temp dirs left behind


def test_flipped_byte_is_refused_before_loading(registry):
    data = dump_lightgbm(_booster())
    meta = registry.register("fraud-lgbm", "lightgbm", data, **_fields())
    path = registry.artifact_file(meta)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(ArtifactIntegrityError) as err:
        registry.load("fraud-lgbm", 1)
    msg = str(err.value)
    assert msg.startswith(
        f"sha256 mismatch for fraud-lgbm v1: registry says {meta.artifact_sha256[:12]}…,"
        f" file is {sha256_hex(bytes(tampered))[:12]}…"
    )


def test_pickle_in_place_of_an_artifact_is_refused(registry):
    X, y = _data()
    est = LogisticRegression().fit(X, y)
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        registry.register("bad", "sklearn-logistic", pickle.dumps(est), **_fields())
    assert registry.versions("bad") == []
    # a pickle slipped in with a matching sha256 is still never unpickled
    meta = registry.register("ok", "sklearn-logistic", dump_skops(est), **_fields())
    blob = pickle.dumps(est)
    registry.artifact_file(meta).write_bytes(blob)
    md = registry.root / "ok" / "1" / "metadata.json"
    md.write_text(json.dumps({**json.loads(md.read_text()), "artifact_sha256": sha256_hex(blob)}))
    with pytest.raises(UnsafeArtifactError, match="pickle/joblib artifacts are never loaded"):
        registry.load("ok", 1)


def test_unknown_model_and_version_are_one_line_errors(registry):
    registry.register("fraud-lgbm", "lightgbm", dump_lightgbm(_booster()), **_fields())
    with pytest.raises(ModelError, match=r"^fraud-lgbm has no version 7 \(versions: 1\)$"):
        registry.get("fraud-lgbm", 7)
    with pytest.raises(ModelError, match=r"no model 'nope' in the registry .*: fraud-lgbm\)"):
        registry.load("nope", 1)


def test_register_from_path_and_bad_ids(registry, tmp_path):
    art = tmp_path / "model.txt"
    art.write_bytes(dump_lightgbm(_booster()))
    assert registry.register("m", "lightgbm", art, **_fields()).version == 1
    with pytest.raises(ModelError, match="bad model id"):
        registry.register("../evil", "lightgbm", art, **_fields())


def test_models_document_matches_the_contract(registry):
    meta = registry.register("fraud-lgbm", "lightgbm", dump_lightgbm(_booster()), **_fields())
    doc_id, doc = models_document("prod", meta)
    assert doc_id == "fraud-lgbm:1"
    template = json.loads(
        (resources.template_dir() / "models.json").read_text()
    )
    props = template["template"]["mappings"]["properties"]
    assert set(doc) == set(props)
    assert set(doc["holdout"]) == set(props["holdout"]["properties"])
    assert doc["namespace"] == "prod" and doc["holdout"]["roc_auc"] == 0.8
    assert doc["features"] == FEATURES and doc["training_window_start"] == 1000


def test_reference_round_trips_through_metadata(registry):
    ref = {"features": {"a": distribution_reference(np.arange(10.0))},
           "score": distribution_reference(np.linspace(0, 1, 11))}
    meta = registry.register(
        "m", "lightgbm", dump_lightgbm(_booster()), **_fields(reference=ref)
    )
    again = registry.get("m", 1)
    assert again.reference == meta.reference
    assert again.reference.features["a"].edges == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_code_version_prefers_settings():
    assert code_version(Settings(code_version="v9")) == "v9"
    detected = code_version(Settings())
    assert detected and detected != "v9"


def test_a_corrupt_metadata_file_is_named_where_the_registry_reads_it(registry):
    registry.register("fraud-lgbm", "lightgbm", dump_lightgbm(_booster()), **_fields())
    path = registry.root / "fraud-lgbm" / "1" / "metadata.json"
    path.write_text("{broken\n")
    line = (f"{path}: not valid JSON (Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1))")
    for read in (lambda: registry.get("fraud-lgbm", 1), registry.list,
                 lambda: registry.latest("fraud-lgbm")):
        with pytest.raises(ModelError) as info:
            read()
        assert str(info.value) == line


def test_metadata_that_is_json_but_not_a_version_is_named_with_its_field(registry):
    meta = registry.register("fraud-lgbm", "lightgbm", dump_lightgbm(_booster()), **_fields())
    path = registry.root / "fraud-lgbm" / "1" / "metadata.json"
    path.write_text(json.dumps({**meta.model_dump(), "version": 0}))
    with pytest.raises(ModelError) as info:
        registry.get("fraud-lgbm", 1)
    assert str(info.value) == (f"{path}: not valid model metadata: version: Input should be"
                               " greater than or equal to 1")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ModelError, match=r"^.*metadata\.json: not valid JSON \("):
        registry.get("fraud-lgbm", 1)
