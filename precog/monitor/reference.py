"""Training reference distributions: per-feature quantile bins, shares and extreme quantiles.

The reference is saved with a model at registration (metadata field ``reference``, the
JSON of :meth:`Reference.to_dict`) and is what data drift, prediction drift and outliers
compare live traffic with. Bin lookup is a bisection over the inner edges: O(log bins).

>>> import numpy as np
>>> X = np.column_stack([np.arange(100.0), np.repeat([0.0, 1.0], 50)])
>>> ref = Reference.from_matrix(X, ["x", "flag"], bins=4)
>>> ref["x"].edges, ref["x"].shares
((24.75, 49.5, 74.25), (0.25, 0.25, 0.25, 0.25))
>>> ref["flag"].edges, ref["flag"].shares, ref["flag"].bin_of(1.0)
((0.0, 0.5, 1.0), (0.0, 0.5, 0.0, 0.5), 3)
>>> Reference.from_dict(ref.to_dict()) == ref
True
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: name under which a model's reference may carry its training score distribution
SCORE = "__score__"

#: quantiles that bound the "normal" range of a feature (outside = per-feature outlier)
TAIL = 0.001


@dataclass(frozen=True)
class FeatureReference:
    """One feature's training distribution.

    ``edges`` are the inner bin edges (ascending, distinct); a value ``v`` falls in bin
    ``bisect_right(edges, v)``, so there are ``len(edges) + 1`` bins and ``shares`` sums
    to 1. ``low``/``high`` are the ``TAIL`` and ``1 - TAIL`` training quantiles; ``min``
    and ``max`` bound the training values.
    """

    name: str
    edges: tuple[float, ...]
    shares: tuple[float, ...]
    low: float
    high: float
    min: float
    max: float
    right_closed: bool = False

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(f"{self.name}: {len(self.edges)} edges need one share more")

    @property
    def n_bins(self) -> int:
        return len(self.shares)

    def bin_of(self, value: float) -> int:
        """Index of the bin holding ``value`` (bins ``(e_i, e_i+1]`` when ``right_closed``)."""
        if self.right_closed:
            return bisect.bisect_left(self.edges, value)
        return bisect.bisect_right(self.edges, value)

    @classmethod
    def from_distribution(cls, name: str, dist: Any, widen: float = 1.0) -> FeatureReference:
        """From the registry's ``DistributionReference`` (edges, shares, quantiles, mean, std).

        Its bins are ``(-inf, e0], (e0, e1], ...``. It stores the 1% and 99% quantiles,
        so the outlier range is that span widened by ``widen`` times itself on each side
        (far outside the bulk, not the 2% tails); min/max are the 1%/99% quantiles.

        >>> from types import SimpleNamespace as NS
        >>> d = NS(edges=[1.0, 2.0], shares=[0.3, 0.4, 0.3], mean=1.5, std=1.0,
        ...        quantiles={"p01": 0.0, "p99": 4.0})
        >>> f = FeatureReference.from_distribution("x", d)
        >>> f.low, f.high, f.bin_of(1.0), f.bin_of(1.5)
        (-4.0, 8.0, 0, 1)
        """
        q = dict(getattr(dist, "quantiles", {}) or {})
        mean, std = float(dist.mean), float(dist.std)
        lo = float(q.get("p01", mean - 3 * std))
        hi = float(q.get("p99", mean + 3 * std))
        span = hi - lo
        return cls(
            name=name,
            edges=tuple(float(e) for e in dist.edges),
            shares=tuple(float(x) for x in dist.shares),
            low=lo - widen * span,
            high=hi + widen * span,
            min=lo,
            max=hi,
            right_closed=True,
        )

    @classmethod
    def from_values(cls, name: str, values: Sequence[float] | np.ndarray, bins: int = 10,
                    tail: float = TAIL) -> FeatureReference:
        """Quantile bins of ``values`` (ties merged, so discrete features get fewer bins)."""
        col = np.asarray(values, dtype=float)
        col = col[np.isfinite(col)]
        if col.size == 0:
            raise ValueError(f"{name}: no finite values to build a reference from")
        qs = np.quantile(col, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        edges = np.unique(qs)
        if edges.size < bins - 1:
            # discrete values: put every distinct value in its own bin
            distinct = np.unique(col)
            if distinct.size <= bins:
                mids = (distinct[:-1] + distinct[1:]) / 2.0
                edges = np.unique(np.concatenate([distinct, mids]))
        counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=edges.size + 1)
        return cls(
            name=name,
            edges=tuple(float(e) for e in edges),
            shares=tuple(float(c) / col.size for c in counts),
            low=float(np.quantile(col, tail)),
            high=float(np.quantile(col, 1.0 - tail)),
            min=float(col.min()),
            max=float(col.max()),
        )


@dataclass(frozen=True)
class Reference:
    """Per-feature training references, by feature name."""

    features: Mapping[str, FeatureReference]

    def __getitem__(self, name: str) -> FeatureReference:
        return self.features[name]

    def __contains__(self, name: object) -> bool:
        return name in self.features

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and dict(self.features) == dict(other.features)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.features)))

    @property
    def names(self) -> list[str]:
        return list(self.features)

    @classmethod
    def from_matrix(cls, X: np.ndarray, names: Sequence[str], bins: int = 10,
                    tail: float = TAIL) -> Reference:
        """Reference of a training matrix (rows = events, columns = ``names``)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ValueError(f"X has shape {X.shape}, expected (n, {len(names)})")
        return cls({n: FeatureReference.from_values(n, X[:, j], bins, tail)
                    for j, n in enumerate(names)})

    @classmethod
    def from_training(cls, training: Any) -> Reference:
        """From the registry's ``TrainingReference`` (model metadata ``reference``): every
        feature, and the holdout scores under :data:`SCORE`."""
        feats = {n: FeatureReference.from_distribution(n, d) for n, d in training.features.items()}
        if getattr(training, "score", None) is not None:
            feats[SCORE] = FeatureReference.from_distribution(SCORE, training.score)
        return cls(feats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored as the model metadata's ``reference``."""
        return {
            "bins": {
                n: {"edges": list(f.edges), "shares": list(f.shares), "low": f.low,
                    "high": f.high, "min": f.min, "max": f.max, "right_closed": f.right_closed}
                for n, f in self.features.items()
            }
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        """Inverse of :meth:`to_dict`."""
        bins = data.get("bins", data)
        return cls({
            n: FeatureReference(
                name=n, edges=tuple(float(e) for e in b["edges"]),
                shares=tuple(float(s) for s in b["shares"]), low=float(b["low"]),
                high=float(b["high"]), min=float(b["min"]), max=float(b["max"]),
                right_closed=bool(b.get("right_closed", False)),
            )
            for n, b in bins.items()
        })
