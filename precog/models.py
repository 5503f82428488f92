"""Model runtimes: tiny adapters that turn a safe artifact into ``predict_proba(X)``.

Two formats only, never pickle or joblib:

- ``lightgbm-text``: LightGBM's own text model (``Booster.model_to_string``).
- ``skops``: scikit-learn estimators saved with skops; loading first checks every type
  skops does not trust by default against :data:`SKOPS_ALLOWED_TYPES` (the types precog's
  training pipeline produces) and refuses anything else.

Every runtime answers one call per batch: ``predict_proba(X)`` with ``X`` a float64
matrix whose columns are the model's features in the model's own order, returning the
1-D float64 probability of the positive class. :func:`served_scores` is the one function
that reproduces the worker's scores bit for bit (training scores its holdout with it).

>>> lightgbm_bytes = b"tree\\nversion=v4\\n"
>>> sniff_format(lightgbm_bytes), sniff_format(b"PK\\x03\\x04..."), sniff_format(b"\\x80\\x05.")
('lightgbm-text', 'skops', 'pickle')
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from precog.errors import ModelError, UnsafeArtifactError

if TYPE_CHECKING:
    from precog.registry import ModelMetadata
    from precog.settings import Settings

log = logging.getLogger("precog.models")

ArtifactFormat = Literal["lightgbm-text", "skops"]

#: The file name of the artifact inside a registry version directory, per format.
ARTIFACT_FILE: dict[str, str] = {"lightgbm-text": "model.txt", "skops": "model.skops"}

#: Types skops does not trust by default that precog's own models contain. A skops file
#: holding any other untrusted type is refused (it could run code when loaded).
SKOPS_ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        # sklearn-logistic: StandardScaler + LogisticRegression
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
        # sklearn-hgb
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting."
        "HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn.preprocessing._label.LabelEncoder",
        # sklearn-random-forest
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        # numpy values inside them
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "numpy.uint64",
        "numpy.random._generator.Generator",
    }
)

_PICKLE_PREFIXES = (b"\x80",)  # protocol 2+ opcode PROTO; joblib files start the same
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_NUMERIC_NAME = re.compile(r"^(?P<id>\d+)(?P<ext>\.[A-Za-z0-9]+)$")


def sniff_format(data: bytes) -> str:
    """What artifact bytes look like: ``lightgbm-text``, ``skops``, ``pickle``, ``unknown``."""
    if data.startswith(b"tree\n") or data.startswith(b"tree\r\n"):
        return "lightgbm-text"
    if data.startswith(_ZIP_MAGIC):
        return "skops"
    if data.startswith(_PICKLE_PREFIXES):
        return "pickle"
    return "unknown"


def _require_format(data: bytes, expected: str, where: str) -> None:
    found = sniff_format(data)
    if found == expected:
        return
    if found == "pickle":
        raise UnsafeArtifactError(f"{where}: pickle/joblib artifacts are never loaded")
    raise UnsafeArtifactError(f"{where}: not a {expected} artifact (looks like {found})")


class ModelRuntime(Protocol):
    """What every runtime adapter offers."""

    artifact_format: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of ``X``."""
        ...


@dataclass
class LightGBMRuntime:
    """A LightGBM booster read from its text model.

    Predicts with ``num_threads=1``. Measured on a 500-row batch of the transactions
    leader (14 features, 200 trees) on 2 cores: idle machine, 2.5 ms with one thread vs
    1.2 ms with OpenMP's default; with the stack and other processes busy, 2.9 ms (p95
    6.7) with one thread vs 8.0 ms (p95 11.3) with the default. The worker shares the
    cores with Kafka, Redis and Elasticsearch, so the single thread is the faster and
    steadier choice there; set ``num_threads=0`` for a dedicated machine.

    :meth:`accelerate` (called when the registry loads a model to score with) swaps in the
    model compiled to native code (:mod:`precog.tree_compiler`) when it is bit-for-bit
    ``Booster.predict`` on a probe batch; ``predict_proba`` gives the same bits either way.
    """

    booster: Any
    num_threads: int = 1
    artifact_format: str = "lightgbm-text"
    model_text: str = field(default="", repr=False)
    compiled: Any = field(default=None, repr=False)

    @classmethod
    def loads(cls, data: bytes, where: str = "artifact") -> LightGBMRuntime:
        """Build from the text model bytes; anything that is not a text model is refused."""
        import lightgbm as lgb

        _require_format(data, "lightgbm-text", where)
        try:
            booster = lgb.Booster(model_str=data.decode("utf-8"))
        except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
            raise ModelError(f"{where}: not a valid LightGBM text model: {exc}") from None
        return cls(booster, model_text=data.decode("utf-8"))

    @classmethod
    def load(cls, path: Path | str) -> LightGBMRuntime:
        """Read a LightGBM text model file."""
        p = Path(path)
        return cls.loads(p.read_bytes(), str(p))

    @property
    def feature_names(self) -> list[str]:
        return list(self.booster.feature_name())

    def accelerate(self, settings: Settings | None = None, where: str = "model") -> bool:
        """Score with the compiled model from now on if it is exact; whether it is.

        Off with ``PRECOG_LIGHTGBM_COMPILED=false``. A model that cannot be compiled, no
        gcc or tl2cgen, or a compiled output that differs on the probe keeps the Booster,
        with one warning naming the reason.
        """
        from precog.settings import get_settings
        from precog.tree_compiler import CompileUnavailable, load_compiled

        cfg = (settings or get_settings()).lightgbm
        if not cfg.compiled or self.compiled is not None:
            return self.compiled is not None
        try:
            self.compiled = load_compiled(self.booster, self.model_text, Path(cfg.cache))
        except CompileUnavailable as exc:
            log.warning("%s: LightGBM scores with the Booster: %s", where, exc)
            return False
        return True

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.predict(_as_matrix(X), self.num_threads)
        out = self.booster.predict(_as_matrix(X), num_threads=self.num_threads)
        return np.asarray(out, dtype=np.float64)


@dataclass
class SkopsRuntime:
    """A scikit-learn classifier read from a skops file after the type allowlist check."""

    estimator: Any
    artifact_format: str = "skops"

    @classmethod
    def loads(cls, data: bytes, where: str = "artifact") -> SkopsRuntime:
        """Build from skops bytes; untrusted types outside the allowlist are refused."""
        import skops.io as sio

        _require_format(data, "skops", where)
        try:
            untrusted = set(sio.get_untrusted_types(data=data))
        except Exception as exc:  # not a readable skops archive
            raise UnsafeArtifactError(f"{where}: not a readable skops file: {exc}") from None
        refused = sorted(untrusted - SKOPS_ALLOWED_TYPES)
        if refused:
            raise UnsafeArtifactError(f"{where}: skops file holds untrusted types {refused}")
        try:
            estimator = sio.loads(data, trusted=sorted(SKOPS_ALLOWED_TYPES))
        except Exception as exc:
            raise ModelError(f"{where}: skops file does not load: {exc}") from None
        if not hasattr(estimator, "predict_proba"):
            raise ModelError(f"{where}: {type(estimator).__name__} has no predict_proba")
        return cls(estimator)

    @classmethod
    def load(cls, path: Path | str) -> SkopsRuntime:
        """Read a skops file."""
        p = Path(path)
        return cls.loads(p.read_bytes(), str(p))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = _as_matrix(X)
        final = _binary_linear(self.estimator)
        if final is not None:
            return _linear_proba(self.estimator, final, X)
        proba = self.estimator.predict_proba(X)
        positive = list(self.estimator.classes_).index(1)
        return np.ascontiguousarray(proba[:, positive], dtype=np.float64)


def _binary_linear(estimator: Any) -> Any:
    """The final step of ``estimator`` when it is a binary linear classifier (classes 0, 1)."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if getattr(final, "coef_", None) is None or [int(c) for c in final.classes_] != [0, 1]:
        return None
    return final


def _linear_proba(estimator: Any, final: Any, X: np.ndarray) -> np.ndarray:
    """P(class 1) of a binary linear model, the same for a row whatever batch it is in.

    ``X @ coef`` goes through BLAS, whose kernels round a row differently depending on how
    many rows share the call (OpenBLAS works in blocks of rows): the same event scored in
    another micro-batch differed in the last bits (found by ``precog replay compare``).
    Accumulating column by column uses elementwise operations only, each exactly rounded
    per row, so the score depends on the row alone. Equal to scikit-learn's predict_proba
    up to rounding (``expit(X @ coef + intercept)``).
    """
    from scipy.special import expit

    Z = X
    for _, step in getattr(estimator, "steps", [])[:-1]:
        Z = _transform(step, Z)
    w = np.asarray(final.coef_, dtype=np.float64).ravel()
    z = np.full(Z.shape[0], float(np.ravel(final.intercept_)[0]))
    for j in range(w.size):
        z += Z[:, j] * w[j]
    return np.ascontiguousarray(expit(z), dtype=np.float64)


def _transform(step: Any, X: np.ndarray) -> np.ndarray:
    """``step.transform(X)``; a fitted ``StandardScaler`` by its own two operations.

    scikit-learn's ``transform`` validates the input (about 100 us, most of a one-event
    request's scoring in ``precog serve``) and then does ``X -= mean_; X /= scale_``; the
    same elementwise operations here give the same bits. Input it would refuse (another
    width, an infinite value) goes to scikit-learn, which says why.
    """
    from sklearn.preprocessing import StandardScaler

    if (type(step) is not StandardScaler or X.ndim != 2 or X.dtype != np.float64
            or X.shape[1] != step.n_features_in_ or np.isinf(X).any()):
        return step.transform(X)
    if step.with_mean:
        X = X - step.mean_
    if step.with_std:
        X = X / step.scale_
    return X


_RUNTIMES: dict[str, type[LightGBMRuntime] | type[SkopsRuntime]] = {
    "lightgbm-text": LightGBMRuntime,
    "skops": SkopsRuntime,
}


def load_runtime(artifact_format: str, data: bytes, where: str = "artifact") -> ModelRuntime:
    """The runtime for ``artifact_format`` built from the artifact bytes."""
    runtime = _RUNTIMES.get(artifact_format)
    if runtime is None:
        raise UnsafeArtifactError(f"{where}: unsupported artifact format {artifact_format!r}")
    return runtime.loads(data, where)


def format_for_algorithm(algorithm: str) -> ArtifactFormat:
    """The artifact format an algorithm is saved in.

    >>> format_for_algorithm("lightgbm"), format_for_algorithm("sklearn-logistic")
    ('lightgbm-text', 'skops')
    """
    if algorithm == "lightgbm":
        return "lightgbm-text"
    if algorithm.startswith("sklearn-"):
        return "skops"
    raise ModelError(f"unknown algorithm {algorithm!r}")


def dump_lightgbm(booster: Any) -> bytes:
    """The LightGBM text model of a trained booster (deterministic for the same model)."""
    return str(booster.model_to_string()).encode("utf-8")


def dump_skops(estimator: Any) -> bytes:
    """The skops bytes of a fitted estimator, canonicalised so equal models give equal bytes."""
    import skops.io as sio

    return canonical_skops(sio.dumps(estimator))


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops archive so its bytes depend only on the model.

    skops names array files and ``__id__`` fields after Python object ids and stamps zip
    entries with the current time; both vary between runs. Ids are renumbered 1, 2, ...
    in order of first appearance (a bijection, so shared references stay shared), and
    entries get a fixed timestamp and order.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read("schema.json"))
        files = {name: src.read(name) for name in src.namelist() if name != "schema.json"}
    ids: dict[int, int] = {}

    def renumber(old: int) -> int:
        return ids.setdefault(old, len(ids) + 1)

    def rename(name: str) -> str:
        m = _NUMERIC_NAME.match(name)
        return f"{renumber(int(m['id']))}{m['ext']}" if m else name

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = renumber(value)
            elif key == "file" and isinstance(value, str):
                out[key] = rename(value)
            else:
                out[key] = walk(value)
        return out

    schema = walk(schema)
    renamed = {rename(name): content for name, content in files.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(renamed):
            dst.writestr(_entry(name), renamed[name])
        dst.writestr(_entry("schema.json"), json.dumps(schema, indent=2))
    return buf.getvalue()


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _as_matrix(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ModelError(f"predict_proba needs a 2-D matrix, got shape {X.shape}")
    return X


@dataclass
class LoadedModel:
    """A registered model version ready to score: its metadata plus a runtime."""

    model_id: str
    version: int
    algorithm: str
    features: list[str]
    threshold: float
    artifact_sha256: str
    metadata: ModelMetadata = field(repr=False)
    runtime: ModelRuntime = field(repr=False)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability per row; ``X`` columns are :attr:`features` in order."""
        X = _as_matrix(X)
        if X.shape[1] != len(self.features):
            raise ModelError(
                f"{self.model_id} v{self.version} expects {len(self.features)} features,"
                f" got {X.shape[1]} columns"
            )
        return self.runtime.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Decisions at the threshold: 1 where ``score >= threshold`` (int64)."""
        return decide(self.predict_proba(X), self.threshold)


def served_scores(
    model: LoadedModel | ModelRuntime,
    X: np.ndarray,
    feature_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The scores the worker serves for the rows of ``X``, bit for bit (on this machine).

    The worker (``precog.scoring.score_batch``) takes the model's columns out of the
    spec's float64 feature matrix and calls ``LoadedModel.predict_proba``; this is that
    path. ``X`` holds the model's features in the model's order, or, with
    ``feature_names``, the columns ``feature_names`` (e.g. the spec's feature vector),
    from which the model's are picked by name as the worker does. ``model`` may also be
    a bare runtime (training scores its holdout before the version is registered).

    A row's score does not depend on the other rows of the call or on the memory
    layout of ``X``. The scikit-learn estimator's own ``predict_proba`` is not this
    function: for linear models it computes ``X @ coef`` with BLAS, whose last bits
    change with the CPU kernel and the batch size (see :func:`_linear_proba` and
    docs/models.md).

    >>> class Half:
    ...     def predict_proba(self, X): return X[:, 0] / 2
    >>> served_scores(Half(), np.array([[1, 9], [3, 9]])).tolist()
    [0.5, 1.5]
    """
    if feature_names is not None:
        if not isinstance(model, LoadedModel):
            raise ModelError("feature_names needs a LoadedModel (a runtime has no features)")
        position = {name: i for i, name in enumerate(feature_names)}
        missing = [f for f in model.features if f not in position]
        if missing:
            raise ModelError(f"{model.model_id} needs features X does not have: {missing}")
        X = _as_matrix(X)[:, [position[f] for f in model.features]]
    return np.asarray(model.predict_proba(_as_matrix(X)), dtype=np.float64)


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The label policy everywhere in precog: flag (1) when ``score >= threshold``.

    >>> decide(np.array([0.1, 0.5, 0.9]), 0.5).tolist()
    [0, 1, 1]
    """
    return (np.asarray(scores) >= threshold).astype(np.int64)
