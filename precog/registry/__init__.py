"""The model registry: the artifact store, model metadata, provenance, reference distributions.

Files only, no services. Modules:

* :mod:`~precog.registry.store` — :class:`ModelRegistry`: versioned, checksummed artifacts
  and their ``metadata.json`` on disk;
* :mod:`~precog.registry.metadata` — :class:`ModelMetadata`, :class:`HoldoutMetrics`;
* :mod:`~precog.registry.provenance` — :func:`sha256_hex`, :func:`training_data_sha256`,
  :func:`code_version`;
* :mod:`~precog.registry.references` — :class:`TrainingReference`, :func:`bin_shares`,
  :func:`distribution_reference` (drift);
* :mod:`~precog.registry.documents` — the ``{ns}-models`` document (:func:`models_document`,
  :func:`index_metadata`);
* :mod:`~precog.registry.model_set` — :func:`model_set_from_roles`: the models a roles
  record names, loaded (the worker and ``precog score-batch``).
"""

from precog.registry.documents import index_metadata, models_document
from precog.registry.metadata import HoldoutMetrics, ModelMetadata
from precog.registry.provenance import code_version, sha256_hex, training_data_sha256
from precog.registry.references import (
    DistributionReference,
    TrainingReference,
    bin_shares,
    distribution_reference,
)
from precog.registry.store import METADATA_FILE, ModelRegistry

__all__ = [
    "METADATA_FILE", "DistributionReference", "HoldoutMetrics", "ModelMetadata",
    "ModelRegistry", "TrainingReference", "bin_shares", "code_version", "distribution_reference",
    "index_metadata", "models_document", "sha256_hex", "training_data_sha256",
]
