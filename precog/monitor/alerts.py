"""Alert records (``alert.v1``) with deterministic ids: the same evidence gives the same id.

>>> a = make_alert("prod", "data_drift", "PSI", window="events#3", statistic=0.31,
...                threshold=0.2, message="m", event_time=5, detected_time=9,
...                model_id="m", version=1, feature="amount")
>>> a["alert_id"] == make_alert("prod", "data_drift", "PSI", window="events#3", statistic=0.5,
...     threshold=0.2, message="other", event_time=6, detected_time=10, model_id="m",
...     version=1, feature="amount")["alert_id"]
True
>>> a["kind"], a["severity"], a["source"]
('data_drift', 'warning', None)
"""

from __future__ import annotations

import hashlib
from typing import Any

KINDS = ("concept_drift", "prediction_drift", "data_drift", "volume", "quality", "outlier", "lag")


def alert_id(namespace: str, kind: str, detector: str, window: str, *subject: object) -> str:
    """Hex id from detector, subject (model, version, feature, source) and window."""
    text = "|".join(str(p) for p in (namespace, kind, detector, *subject, window))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_alert(
    namespace: str,
    kind: str,
    detector: str,
    *,
    window: str,
    statistic: float,
    threshold: float,
    message: str,
    event_time: int,
    detected_time: int,
    model_id: str | None = None,
    version: int | None = None,
    feature: str | None = None,
    source: str | None = None,
    severity: str = "warning",
    identity: str | None = None,
) -> dict[str, Any]:
    """One ``alert.v1`` record.

    The id comes from detector, subject and ``window``, or from ``identity`` when the window
    is not stable across restarts and replays (a count kept in memory, for example).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    return {
        "alert_id": alert_id(namespace, kind, detector, identity or window, model_id, version,
                             feature, source),
        "namespace": namespace,
        "kind": kind,
        "detector": detector,
        "severity": severity,
        "model_id": model_id,
        "version": version,
        "feature": feature,
        "source": source,
        "window": window,
        "statistic": float(statistic),
        "threshold": float(threshold),
        "message": message,
        "event_time": int(event_time),
        "detected_time": int(detected_time),
    }
