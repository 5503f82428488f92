"""The model registry: versioned, checksummed model artifacts and their metadata on disk.

Layout (``root`` = ``settings.registry_dir``)::

    root/<model_id>/<version>/model.txt        LightGBM text model   (or model.skops)
    root/<model_id>/<version>/metadata.json    ModelMetadata

Versions are 1, 2, 3, ... per model id and never change once written: a version is
written to a temporary directory and renamed into place. Loading recomputes the
artifact's sha256 and refuses a mismatch before deserialising anything.

>>> edges = [1.0, 2.0]
>>> bin_shares(edges, np.array([0.5, 1.0, 1.5, 2.5])).tolist()  # (-inf,1] (1,2] (2,inf)
[0.5, 0.25, 0.25]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from precog import resources
from precog.errors import ArtifactIntegrityError, ModelError
from precog.models import (
    ARTIFACT_FILE,
    LoadedModel,
    format_for_algorithm,
    load_runtime,
)

if TYPE_CHECKING:
    from precog.settings import Settings

METADATA_FILE = "metadata.json"


class HoldoutMetrics(BaseModel):
    """Metrics of a model on its time-based holdout, at its threshold."""

    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    roc_auc: float
    log_loss: float
    positive_rate: float = Field(description="share of holdout events flagged at the threshold")
    label_rate: float = Field(0.0, description="share of holdout events whose label is 1")


class DistributionReference(BaseModel):
    """A variable's training distribution, for drift (PSI) against live data.

    Bins are ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` over the unique decile
    ``edges``; ``shares`` has ``len(edges) + 1`` entries summing to 1. Use
    :func:`bin_shares` to bin live values the same way.
    """

    model_config = ConfigDict(frozen=True)

    edges: list[float]
    shares: list[float]
    mean: float
    std: float
    count: int
    quantiles: dict[str, float] = Field(
        default_factory=dict, description="p01, p05, p10, ..., p90, p95, p99"
    )


class TrainingReference(BaseModel):
    """Reference distributions: each feature over the training rows, and the model's
    scores over the holdout (out-of-sample, like live scores)."""

    model_config = ConfigDict(frozen=True)

    features: dict[str, DistributionReference]
    score: DistributionReference


class ModelMetadata(BaseModel):
    """Everything known about one registered model version (``metadata.json``)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_id: str
    version: int = Field(ge=1)
    algorithm: str
    artifact_format: Literal["lightgbm-text", "skops"]
    artifact_path: str = Field(description="artifact file relative to the registry root")
    artifact_sha256: str
    spec: str = Field(description="name of the pipeline spec the model was trained for")
    features: list[str] = Field(description="input columns, in the order predict expects")
    threshold: float = Field(description="label = 1 when score >= threshold")
    threshold_policy: str = ""
    training_window_start: int = Field(description="first training event time, epoch ms")
    training_window_end: int = Field(description="last training event time, epoch ms")
    training_rows: int
    training_positives: int = 0
    training_data_sha256: str
    holdout_start: int
    holdout_end: int
    holdout_rows: int
    holdout: HoldoutMetrics
    params: dict[str, Any] = {}
    seed: int = 0
    code_version: str
    created_time: int = Field(description="registration time, epoch ms")
    reference: TrainingReference | None = None

    @property
    def ref(self) -> str:
        """``model_id vN`` as messages show it."""
        return f"{self.model_id} v{self.version}"


# --------------------------------------------------------------------------- registry


class ModelRegistry:
    """Versioned model artifacts under one root directory; files only, no services."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def model_ids(self) -> list[str]:
        """Every model id with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._has(p))

    def versions(self, model_id: str) -> list[int]:
        """The registered versions of ``model_id``, ascending (empty when unknown)."""
        base = self.root / model_id
        if not base.is_dir():
            return []
        found = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        return sorted(v for v in found if (base / str(v) / METADATA_FILE).is_file())

    def latest(self, model_id: str) -> ModelMetadata:
        """The newest version of ``model_id``."""
        versions = self.versions(model_id)
        if not versions:
            raise self._unknown_model(model_id)
        return self.get(model_id, versions[-1])

    def get(self, model_id: str, version: int) -> ModelMetadata:
        """The metadata of one version; unknown ids or versions raise :class:`ModelError`."""
        path = self.root / model_id / str(version) / METADATA_FILE
        if not path.is_file():
            known = self.versions(model_id)
            if not known:
                raise self._unknown_model(model_id)
            listed = ", ".join(map(str, known))
            raise ModelError(f"{model_id} has no version {version} (versions: {listed})")
        return ModelMetadata.model_validate_json(path.read_text())

    def list(self) -> list[ModelMetadata]:
        """Every registered version of every model, by model id then version."""
        return [self.get(m, v) for m in self.model_ids() for v in self.versions(m)]

    def artifact_file(self, metadata: ModelMetadata) -> Path:
        """Where the artifact of ``metadata`` lives."""
        return self.root / metadata.artifact_path

    def load(self, model_id: str, version: int) -> LoadedModel:
        """Verify the artifact's sha256 against the registry, then load it.

        Raises :class:`ArtifactIntegrityError` on a mismatch (nothing is deserialised)
        and :class:`UnsafeArtifactError` for formats other than LightGBM text and skops.
        """
        meta = self.get(model_id, version)
        path = self.artifact_file(meta)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactIntegrityError(f"artifact of {meta.ref} is missing: {path}") from None
        found = sha256_hex(data)
        if found != meta.artifact_sha256:
            raise ArtifactIntegrityError(
                f"sha256 mismatch for {meta.ref}: registry says {meta.artifact_sha256[:12]}…,"
                f" file is {found[:12]}… ({path})"
            )
        runtime = load_runtime(meta.artifact_format, data, str(path))
        names = getattr(runtime, "feature_names", None)
        if names is not None and list(names) != list(meta.features):
            raise ModelError(f"{meta.ref}: artifact features {names} != metadata {meta.features}")
        return LoadedModel(
            model_id=meta.model_id,
            version=meta.version,
            algorithm=meta.algorithm,
            features=list(meta.features),
            threshold=meta.threshold,
            artifact_sha256=meta.artifact_sha256,
            metadata=meta,
            runtime=runtime,
        )

    def register(
        self, model_id: str, algorithm: str, artifact: bytes | Path, **fields: Any
    ) -> ModelMetadata:
        """Store ``artifact`` as the next version of ``model_id``; returns its metadata.

        ``fields`` are the remaining :class:`ModelMetadata` fields (spec, features,
        threshold, training window, holdout, code_version, ...); the registry fills in
        version, artifact format, path, sha256 and, unless given, created_time. The
        artifact must load in its safe format, or nothing is written.
        """
        _check_model_id(model_id)
        data = artifact.read_bytes() if isinstance(artifact, Path) else bytes(artifact)
        fmt = format_for_algorithm(algorithm)
        load_runtime(fmt, data, f"{model_id} artifact")  # refuse unsafe or broken artifacts
        base = self.root / model_id
        base.mkdir(parents=True, exist_ok=True)
        fields.setdefault("created_time", int(time.time() * 1000))
        while True:
            version = (self.versions(model_id) or [0])[-1] + 1
            meta = ModelMetadata(
                model_id=model_id,
                version=version,
                algorithm=algorithm,
                artifact_format=fmt,
                artifact_path=f"{model_id}/{version}/{ARTIFACT_FILE[fmt]}",
                artifact_sha256=sha256_hex(data),
                **fields,
            )
            if self._write_version(base, meta, data):
                return meta

    def _write_version(self, base: Path, meta: ModelMetadata, data: bytes) -> bool:
        """Write into a temp dir and rename it to ``<version>``; False if that was taken."""
        tmp = base / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            _write_synced(tmp / ARTIFACT_FILE[meta.artifact_format], data)
            _write_synced(tmp / METADATA_FILE, meta.model_dump_json(indent=2).encode())
            try:
                os.rename(tmp, base / str(meta.version))
            except OSError:
                if (base / str(meta.version)).exists():  # a concurrent registration won
                    return False
                raise
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _has(self, model_dir: Path) -> bool:
        return any(p.name.isdigit() for p in model_dir.iterdir())

    def _unknown_model(self, model_id: str) -> ModelError:
        known = ", ".join(self.model_ids()) or "none"
        return ModelError(f"no model {model_id!r} in the registry {self.root} (models: {known})")


def _check_model_id(model_id: str) -> None:
    ok = model_id and all(c.isalnum() or c in "-_." for c in model_id)
    if not ok or model_id.startswith("."):
        raise ModelError(f"bad model id {model_id!r}: use letters, digits, '-', '_', '.'")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- hashes


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``.

    >>> sha256_hex(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def training_data_sha256(features: list[str], X: np.ndarray, y: np.ndarray) -> str:
    """Fingerprint of what a model was fitted on: its feature names, matrix and labels.

    sha256 over the UTF-8 feature names joined by newlines, a NUL byte, the matrix as
    C-ordered little-endian float64, then the labels as int8. Equal training data gives
    equal hashes on any machine.

    >>> X = np.array([[1.0, 2.0], [3.0, 4.0]]); y = np.array([0, 1])
    >>> training_data_sha256(["a", "b"], X, y) == training_data_sha256(["a", "b"], X, y)
    True
    >>> training_data_sha256(["a", "b"], X, y) == training_data_sha256(["a", "b"], X, 1 - y)
    False
    """
    h = hashlib.sha256()
    h.update("\n".join(features).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i1").tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- references

_QUANTILES = {"p01": 0.01, "p05": 0.05, **{f"p{q}0": q / 10 for q in range(1, 10)}}
_QUANTILES.update({"p95": 0.95, "p99": 0.99})


def bin_shares(edges: list[float], values: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(len(values), 1)


def distribution_reference(values: np.ndarray, n_bins: int = 10) -> DistributionReference:
    """Quantile bins (deciles by default), shares, mean/std and quantiles of ``values``.

    Edges are observed values (inverted-CDF quantiles), repeated edges merge and an edge
    at the maximum is dropped, so no bin is empty by construction: a binary feature gets
    two bins.

    >>> ref = distribution_reference(np.arange(1.0, 11.0))
    >>> ref.edges
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    >>> ref.shares
    [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    >>> ref = distribution_reference(np.array([0.0, 0.0, 0.0, 1.0]))
    >>> ref.edges, ref.shares
    ([0.0], [0.75, 0.25])
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return DistributionReference(edges=[], shares=[1.0], mean=0.0, std=0.0, count=0)
    inner = np.quantile(v, np.arange(1, n_bins) / n_bins, method="inverted_cdf")
    edges = [float(e) for e in np.unique(inner) if e < v.max()]
    shares = [round(float(s), 12) for s in bin_shares(edges, v)]
    qs = np.quantile(v, list(_QUANTILES.values()))
    return DistributionReference(
        edges=edges,
        shares=shares,
        mean=float(v.mean()),
        std=float(v.std()),
        count=int(v.size),
        quantiles={k: float(q) for k, q in zip(_QUANTILES, qs, strict=True)},
    )


# --------------------------------------------------------------------------- code version


def code_version(settings: Settings | None = None) -> str:
    """``settings.code_version``, else the git short hash (``-dirty`` with local changes),
    else the installed package version."""
    if settings is not None and settings.code_version:
        return settings.code_version
    root = resources.checkout_root()
    return _detected_code_version(str(root) if root else None)


@lru_cache(maxsize=4)
def _detected_code_version(repo: str | None) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()

    if repo is not None:  # None: installed from a wheel, no checkout to ask
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--untracked-files=no")
            return f"{head}-dirty" if dirty else head
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return importlib_metadata.version("precog")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- model index


def models_document(namespace: str, meta: ModelMetadata) -> tuple[str, dict[str, Any]]:
    """The ``{ns}-models`` document of one version and its ``_id`` (docs/documents.md)."""
    doc = {
        "model_id": meta.model_id,
        "version": meta.version,
        "algorithm": meta.algorithm,
        "spec": meta.spec,
        "namespace": namespace,
        "artifact_sha256": meta.artifact_sha256,
        "artifact_format": meta.artifact_format,
        "artifact_path": meta.artifact_path,
        "code_version": meta.code_version,
        "training_data_sha256": meta.training_data_sha256,
        "features": list(meta.features),
        "training_window_start": meta.training_window_start,
        "training_window_end": meta.training_window_end,
        "holdout_start": meta.holdout_start,
        "holdout_end": meta.holdout_end,
        "created_time": meta.created_time,
        "training_rows": meta.training_rows,
        "holdout_rows": meta.holdout_rows,
        "threshold": meta.threshold,
        "holdout": meta.holdout.model_dump(
            include={"precision", "recall", "f1", "roc_auc", "log_loss", "positive_rate"}
        ),
    }
    return f"{meta.model_id}:{meta.version}", doc


def index_metadata(es: Any, settings: Settings, metadata: ModelMetadata) -> str:
    """Write the ``{ns}-models`` document of ``metadata`` with an Elasticsearch client.

    Idempotent (``_id`` = ``{model_id}:{version}``); returns the ``_id``. Connection
    errors propagate: callers at the edge turn them into ``ServiceUnavailable``.
    """
    doc_id, doc = models_document(settings.namespace, metadata)
    es.index(index=settings.index("models"), id=doc_id, document=doc, refresh="wait_for")
    return doc_id
