"""The ``{ns}-models`` Elasticsearch document of a registered version (docs/documents.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from precog.registry.metadata import ModelMetadata

if TYPE_CHECKING:
    from precog.settings import Settings


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
