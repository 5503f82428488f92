"""The compiled LightGBM scorer: bit-for-bit ``Booster.predict``, its cache, its fallbacks.

Most tests use a small seeded model (20 trees, compiled in about a second); one compiles a
demo-sized model (200 trees, 31 leaves, trained as the spec's leader is) and scores 200k
seeded edge-value rows with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from precog.models import LightGBMRuntime
from precog.settings import Settings
from precog.tree_compiler import DBL_MAX, KZERO, bits_equal, probe_rows, unsupported

pytestmark = pytest.mark.timeout(120)


def train(rounds: int, seed: int, **params: object) -> bytes:
    """A seeded binary model on NaN-heavy data with many exact zeros and negative values."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    X = rng.normal(-1.0, 3.0, (3000, 8))
    X[rng.random(X.shape) < 0.3] = 0.0
    y = (X[:, 1] + X[:, 2] * X[:, 3] + rng.normal(0, 1, len(X)) > 0).astype(int)
    X[rng.random(X.shape) < 0.2] = np.nan
    booster = lgb.train({"objective": "binary", "verbose": -1, "seed": seed, "num_threads": 1,
                         "deterministic": True, "force_row_wise": True, "num_leaves": 31,
                         **params}, lgb.Dataset(X, y), num_boost_round=rounds)
    return str(booster.model_to_string()).encode()


@pytest.fixture(scope="module")
def small() -> bytes:
    return train(20, seed=4)


def settings_for(cache: Path, compiled: bool = True) -> Settings:
    return Settings(lightgbm={"compiled": compiled, "cache": cache})


def edge_rows(runtime: LightGBMRuntime, n: int, seed: int) -> np.ndarray:
    X = probe_rows(runtime.model_text, seed=seed, n=n)
    X[::97] = np.nan  # whole rows missing
    X[1::97] = 0.0
    X[2::97, :] = -KZERO
    X[3::97, 0] = DBL_MAX
    X[4::97, -1] = -DBL_MAX
    return X


def assert_same_as_booster(runtime: LightGBMRuntime, X: np.ndarray) -> None:
    got = runtime.predict_proba(X)
    want = np.asarray(runtime.booster.predict(X, num_threads=1), dtype=np.float64)
    assert bits_equal(got, want), int(np.sum(got != want))


def test_small_model_bit_for_bit(small: bytes, tmp_path: Path) -> None:
    rt = LightGBMRuntime.loads(small)
    assert rt.accelerate(settings_for(tmp_path)) and rt.compiled is not None
    assert_same_as_booster(rt, edge_rows(rt, 50_000, seed=1))
    assert_same_as_booster(rt, edge_rows(rt, 1, seed=2))  # a single row
    X = edge_rows(rt, 3000, seed=9)
    for layout in (np.asfortranarray(X), X[::3], np.hstack([X, X])[:, ::2]):
        assert_same_as_booster(rt, layout)  # Fortran order, row and column strides
    # a value within 1e-35 of zero is zero to LightGBM, and so to the compiled scorer
    X = np.full((4, rt.booster.num_feature()), 1e-36)
    assert_same_as_booster(rt, X)
    # +-DBL_MAX, missing to tl2cgen's reader, a number to LightGBM: those rows go to the
    # Booster
    X[1, 0], X[2, -1] = DBL_MAX, -DBL_MAX
    assert_same_as_booster(rt, X)


def test_demo_sized_model_bit_for_bit(tmp_path: Path) -> None:
    data = train(200, seed=7, learning_rate=0.05, min_child_samples=20)
    rt = LightGBMRuntime.loads(data)
    assert rt.accelerate(settings_for(tmp_path))
    assert_same_as_booster(rt, edge_rows(rt, 200_000, seed=3))


def compiled_entry(data: bytes, cache: Path) -> tuple[Path, dict[str, object]]:
    """Compile ``data`` into ``cache``; its one entry and manifest."""
    assert LightGBMRuntime.loads(data).accelerate(settings_for(cache))
    entry, = [p for p in cache.iterdir() if p.is_dir()]
    return entry, json.loads((entry / "manifest.json").read_text())


def test_cached_library_is_reused(small: bytes, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import precog.tree_compiler as tc

    entry, manifest = compiled_entry(small, tmp_path)
    assert manifest["artifact_sha256"] == hashlib.sha256(small).hexdigest()
    assert entry.name.startswith(manifest["artifact_sha256"])
    assert entry.stat().st_mode & 0o777 == 0o700

    def no_compile(*args: object) -> None:
        raise AssertionError("compiled again although cached")

    monkeypatch.setattr(tc, "_compile", no_compile)
    rt = LightGBMRuntime.loads(small)
    assert rt.accelerate(settings_for(tmp_path))
    assert_same_as_booster(rt, edge_rows(rt, 2000, seed=5))


def test_tampered_library_is_not_loaded(small: bytes, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    entry, _ = compiled_entry(small, tmp_path)
    lib = entry / "model.so"
    lib.chmod(0o700)
    lib.write_bytes(lib.read_bytes()[:-64] + b"\0" * 64)  # not what the manifest says
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        rt = LightGBMRuntime.loads(small)
        assert rt.accelerate(settings_for(tmp_path))
    assert "does not match its manifest; rebuilding" in caplog.text
    manifest = json.loads((entry / "manifest.json").read_text())
    assert hashlib.sha256(lib.read_bytes()).hexdigest() == manifest["library_sha256"]
    assert_same_as_booster(rt, edge_rows(rt, 2000, seed=6))


def test_a_loose_umask_still_gives_private_entries(small: bytes, tmp_path: Path) -> None:
    import os

    old = os.umask(0o002)
    try:
        entry, _ = compiled_entry(small, tmp_path)
        rt = LightGBMRuntime.loads(small)
        assert rt.accelerate(settings_for(tmp_path))  # the cached entry is accepted
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o077 for p in (entry, *entry.iterdir())} == {0}


def test_world_writable_cache_is_refused(small: bytes, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    rt = LightGBMRuntime.loads(small)
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        assert not rt.accelerate(settings_for(cache))
    assert rt.compiled is None and "writable by others" in caplog.text


def test_an_unusable_cache_falls_back_instead_of_failing_the_load(
        small: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A read-only root file system (the Helm chart's default) with no volume at the cache:
    the model still loads and scores, with the Booster (here the cache's parent is a file,
    which no user, root included, can make a directory in)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rt = LightGBMRuntime.loads(small)
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        assert not rt.accelerate(settings_for(blocker / "cache"))
    assert rt.compiled is None and "PRECOG_LIGHTGBM_CACHE" in caplog.text
    assert_same_as_booster(rt, edge_rows(rt, 500, seed=9))


def test_disabled_keeps_the_booster(small: bytes, tmp_path: Path) -> None:
    rt = LightGBMRuntime.loads(small)
    assert not rt.accelerate(settings_for(tmp_path, compiled=False))
    assert rt.compiled is None and not any(tmp_path.iterdir())


def test_the_env_turns_it_off(small: bytes, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_LIGHTGBM_COMPILED", "false")
    monkeypatch.setenv("PRECOG_LIGHTGBM_CACHE", str(tmp_path))
    assert Settings().lightgbm.compiled is False
    assert not LightGBMRuntime.loads(small).accelerate(Settings())


def test_no_compiler_falls_back_with_a_warning(small: bytes, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rt = LightGBMRuntime.loads(small)
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        assert not rt.accelerate(settings_for(tmp_path / "cache"), where="m v1")
    assert rt.compiled is None and "m v1: LightGBM scores with the Booster: no gcc" in caplog.text
    assert_same_as_booster(rt, edge_rows(rt, 500, seed=8))


def test_unexact_models_are_not_compiled(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    data = train(5, seed=2, zero_as_missing=True)
    assert unsupported(data.decode()) == "zero_as_missing splits"
    rt = LightGBMRuntime.loads(data)
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        assert not rt.accelerate(settings_for(tmp_path))
    assert "zero_as_missing" in caplog.text and not any(tmp_path.iterdir())


def test_a_differing_library_is_refused(small: bytes, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """The probe check: a library whose output is off by one ulp is not used."""
    import precog.tree_compiler as tc

    exact = tc.CompiledTrees.predict

    def off_by_one_ulp(self: tc.CompiledTrees, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        out = exact(self, X, num_threads)
        return np.nextafter(out, np.inf)

    monkeypatch.setattr(tc.CompiledTrees, "predict", off_by_one_ulp)
    rt = LightGBMRuntime.loads(small)
    with caplog.at_level(logging.WARNING, logger="precog.models"):
        assert not rt.accelerate(settings_for(tmp_path))
    assert rt.compiled is None and "differs from Booster.predict" in caplog.text


def test_the_registry_loads_the_compiled_scorer(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """As the worker loads a model: compiled when enabled, the worker's scores unchanged."""
    from precog.models import served_scores
    from precog.scoring import make_model_set, score_batch
    from precog.settings import get_settings
    from tests.unit.test_models import SPEC_NAMES, _registered

    monkeypatch.setenv("PRECOG_LIGHTGBM_COMPILED", "true")
    monkeypatch.setenv("PRECOG_LIGHTGBM_CACHE", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        model, spec_X = _registered(tmp_path, "lightgbm")
    finally:
        get_settings.cache_clear()
    assert isinstance(model.runtime, LightGBMRuntime) and model.runtime.compiled is not None
    worker = score_batch(make_model_set(1, model, [], SPEC_NAMES), spec_X)[0]
    own = np.ascontiguousarray(spec_X[:, [3, 2, 4, 0]])
    assert bits_equal(worker, model.runtime.booster.predict(own, num_threads=1))
    assert bits_equal(served_scores(model, spec_X, SPEC_NAMES), worker)
