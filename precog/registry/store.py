"""The model store: versioned, checksummed model artifacts and their metadata on disk.

Layout (``root`` = ``settings.registry_dir``)::

    root/<model_id>/<version>/model.txt        LightGBM text model   (or model.skops)
    root/<model_id>/<version>/metadata.json    ModelMetadata

Versions are 1, 2, 3, ... per model id and never change once written: a version is
written to a temporary directory and renamed into place. Loading recomputes the
artifact's sha256 and refuses a mismatch before deserialising anything.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from precog.errors import ArtifactIntegrityError, ConfigError, ModelError
from precog.models import (
    ARTIFACT_FILE,
    LightGBMRuntime,
    LoadedModel,
    format_for_algorithm,
    load_runtime,
)
from precog.registry.metadata import ModelMetadata
from precog.registry.provenance import sha256_hex
from precog.spec import PipelineSpec

METADATA_FILE = "metadata.json"


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
        return _read_metadata(path)

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
        if isinstance(runtime, LightGBMRuntime):  # the compiled scorer, when exact
            runtime.accelerate(where=meta.ref)
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

    def verify_for(self, spec: PipelineSpec, model_id: str, version: int) -> ModelMetadata:
        """The version exists, was trained for ``spec`` on features it has, and loads (sha256).

        What every role change checks before it is published (``precog models``, the
        promotion policy's health check).
        """
        meta = self.check_for(spec, model_id, version)
        self.load(model_id, version)
        return meta

    def check_for(self, spec: PipelineSpec, model_id: str, version: int) -> ModelMetadata:
        """The version exists and was trained for ``spec`` on features it has: the cheap
        part of :meth:`verify_for`, nothing is loaded (or compiled)."""
        meta = self.get(model_id, version)
        if meta.spec != spec.name:
            raise ConfigError(f"{meta.ref} was trained for spec {meta.spec!r}, not {spec.name!r}")
        missing = [f for f in meta.features if f not in spec.feature_names]
        if missing:
            raise ConfigError(f"{meta.ref} uses features the spec {spec.name} lacks: {missing}")
        return meta

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


def _read_metadata(path: Path) -> ModelMetadata:
    """The :class:`ModelMetadata` in ``path``; a corrupt file raises :class:`ModelError`
    naming it (not JSON, or not the metadata of a version)."""
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        count = exc.error_count()
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise ModelError(f"{path}: not valid model metadata: "
                         f"{where + ': ' if where else ''}{msg}{more}") from None


def _check_model_id(model_id: str) -> None:
    ok = model_id and all(c.isalnum() or c in "-_." for c in model_id)
    if not ok or model_id.startswith("."):
        raise ModelError(f"bad model id {model_id!r}: use letters, digits, '-', '_', '.'")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
