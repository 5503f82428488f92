"""Per-event outlier flags: per feature against the training tails, and one multivariate score.

* per feature: the value lies outside the training reference's ``[low, high]`` (its 0.1%
  and 99.9% quantiles);
* multivariate: ``river.anomaly.HalfSpaceTrees`` with the reference min/max as feature
  limits (i.e. features scaled to [0, 1] by the training range). The trees are warmed up
  on a seeded sample drawn from the reference histograms, and the score threshold is the
  ``quantile`` of the warm-up scores, so about ``1 - quantile`` of in-distribution events
  are flagged. The detector keeps learning online (score first, then learn).

>>> import numpy as np
>>> from precog.monitor.reference import Reference
>>> rng = np.random.default_rng(1)
>>> ref = Reference.from_matrix(rng.normal(size=(5000, 2)), ["a", "b"])
>>> det = OutlierDetector(ref, seed=7)
>>> det.score({"a": 0.1, "b": -0.2}).features
()
>>> r = det.score({"a": 40.0, "b": 0.0})
>>> r.outlier, r.features
(True, ('a',))
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from river import anomaly

from precog.monitor.reference import FeatureReference, Reference


@dataclass(frozen=True)
class OutlierResult:
    """The verdict on one event."""

    outlier: bool
    score: float
    features: tuple[str, ...]
    multivariate: bool


def _sample(ref: FeatureReference, rng: random.Random) -> float:
    """One value drawn from the reference histogram (uniform inside the chosen bin)."""
    i = rng.choices(range(ref.n_bins), weights=ref.shares)[0]
    lo = ref.min if i == 0 else ref.edges[i - 1]
    hi = ref.max if i == ref.n_bins - 1 else ref.edges[i]
    if hi <= lo:
        return lo
    return rng.uniform(lo, hi)


class OutlierDetector:
    """Flags events far from the training reference."""

    def __init__(self, reference: Reference, names: list[str] | None = None, n_trees: int = 10,
                 height: int = 8, window_size: int = 250, warmup: int = 2000,
                 quantile: float = 0.999, seed: int = 42) -> None:
        self.reference = reference
        self.names = names if names is not None else reference.names
        limits: dict[Hashable, tuple[float, float]] = {}
        for n in self.names:
            f = reference[n]
            span = f.max - f.min
            limits[n] = (f.min, f.max) if span > 0 else (f.min - 0.5, f.max + 0.5)
        self.hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height,
                                          window_size=window_size, limits=limits, seed=seed)
        self.threshold = self._warm_up(warmup, quantile, seed)

    def _warm_up(self, n: int, quantile: float, seed: int) -> float:
        rng = random.Random(seed)
        samples = [{f: _sample(self.reference[f], rng) for f in self.names} for _ in range(n)]
        for x in samples:
            self.hst.learn_one(x)
        # score the second half again on the trained trees for the threshold
        tail = sorted(self.hst.score_one(x) for x in samples[n // 2:])
        return tail[min(len(tail) - 1, int(quantile * len(tail)))] if tail else 1.0

    def score(self, features: Mapping[str, float], learn: bool = True) -> OutlierResult:
        """Score one event (then learn from it unless ``learn`` is false)."""
        x = {n: float(features[n]) for n in self.names if n in features}
        extreme = tuple(n for n, v in x.items()
                        if v < self.reference[n].low or v > self.reference[n].high)
        s = float(self.hst.score_one(x))
        if learn:
            self.hst.learn_one(x)
        multivariate = s > self.threshold
        return OutlierResult(bool(extreme) or multivariate, s, extreme, multivariate)
