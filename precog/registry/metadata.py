"""What the registry knows about one model version (``metadata.json``): :class:`ModelMetadata`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from precog.registry.references import TrainingReference


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
    training_source: str = Field(
        "", description="where the training data came from: a history directory, or topics"
        " with partitions, offsets and time window (precog retrain)")
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
