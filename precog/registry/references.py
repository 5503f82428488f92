"""Training reference distributions for drift: quantile bins, shares and quantiles.

>>> edges = [1.0, 2.0]
>>> bin_shares(edges, np.array([0.5, 1.0, 1.5, 2.5])).tolist()  # (-inf,1] (1,2] (2,inf)
[0.5, 0.25, 0.25]
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


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
