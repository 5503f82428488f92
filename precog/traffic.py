"""Traffic policies: whose decision is served for each event, by a stable hash of its entity.

Every model scores every event; a traffic policy only chooses which model's decision is
*served*. ``shadow``: the leader's, always. ``canary``: a candidate's for a share of the
entities, the leader's for the rest. ``ab``: one of n arms with weights.

An entity's **bucket** is a keyed BLAKE2b hash of its id, modulo :data:`BUCKETS` (10,000),
so an entity always lands in the same bucket, on every worker and in ``precog serve``.
Arms own consecutive ranges of buckets in their order (:meth:`Traffic.bounds`); a canary
is the first arm, so raising its weight from 5% to 25% only adds entities to it: an entity
that saw the candidate keeps seeing it.

The weights live in the roles record (``schemas/model_control.v2.avsc``, field
``traffic``): one source of truth with a revision, hot-reloaded by every worker like the
roles themselves (docs/lifecycle.md "Traffic").

>>> bucket("card-1") == bucket("card-1"), 0 <= bucket("card-1") < BUCKETS
(True, True)
>>> t = canary(ModelRef("lead", 1), ModelRef("cand", 2), 500, since=0)
>>> [(a.name, a.weight) for a in t.arms], t.bounds()
([('canary', 500), ('leader', 9500)], (500, 10000))
>>> t.arm_of_bucket(499).name, t.arm_of_bucket(500).name
('canary', 'leader')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from precog.roles import BUCKETS, LEADER_ARM, ModelRef, Traffic, canary

__all__ = ["BUCKETS", "ArmPlan", "bucket", "buckets", "canary", "percent_to_weight"]

POLICIES = ("shadow", "canary", "ab")


def bucket(entity_id: str, salt: str = "") -> int:
    """The entity's bucket in ``[0, BUCKETS)``: BLAKE2b-64 keyed with ``salt``, mod 10,000.

    The modulo bias of a 64-bit hash over 10,000 buckets is below 1e-15.

    >>> bucket("card-7"), bucket("card-7", salt="other") != bucket("card-7")
    (885, True)
    """
    key = salt.encode()[:64]
    digest = hashlib.blake2b(entity_id.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=key).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def buckets(entity_ids: Sequence[str], salt: str = "") -> np.ndarray:
    """The bucket of every entity id, each distinct id hashed once."""
    seen: dict[str, int] = {}
    out = np.empty(len(entity_ids), dtype=np.int64)
    for i, e in enumerate(entity_ids):
        b = seen.get(e)
        if b is None:
            b = seen[e] = bucket(e, salt)
        out[i] = b
    return out


def percent_to_weight(percent: float) -> int:
    """Buckets of a share given in percent.

    >>> percent_to_weight(5), percent_to_weight(0.01), percent_to_weight(100)
    (500, 1, 10000)
    """
    return int(round(percent * BUCKETS / 100))


@dataclass(frozen=True)
class ArmPlan:
    """A traffic split bound to a model set: per arm, the index of its model in
    ``ModelSet.all`` (leader first).

    ``shadow`` has one arm, ``leader``, model 0, and hashes nothing.

    >>> plan = ArmPlan.shadow()
    >>> plan.assign(["a", "b"]).tolist(), plan.names
    ([0, 0], ('leader',))
    """

    policy: str
    names: tuple[str, ...]
    models: tuple[ModelRef | None, ...]
    model_index: tuple[int, ...]
    bounds: np.ndarray
    salt: str = ""

    @classmethod
    def shadow(cls, leader: ModelRef | None = None) -> ArmPlan:
        return cls("shadow", (LEADER_ARM,), (leader,), (0,), np.array([BUCKETS]))

    @classmethod
    def of(cls, traffic: Traffic | None, active: Sequence[ModelRef], salt: str = "") -> ArmPlan:
        """The plan of ``traffic`` over the models ``active`` (``ModelSet.all`` order).

        A split naming a model that is not loaded is refused (``KeyError``): the caller
        serves shadow instead.
        """
        if traffic is None:
            return cls.shadow(active[0] if active else None)
        position = {ref: i for i, ref in enumerate(active)}
        return cls(traffic.policy, tuple(a.name for a in traffic.arms),
                   tuple(a.model for a in traffic.arms),
                   tuple(position[a.model] for a in traffic.arms),
                   np.array(traffic.bounds(), dtype=np.int64), salt)

    def buckets(self, entity_ids: Sequence[str]) -> np.ndarray:
        """Each event's bucket (-1 under shadow: nothing is hashed)."""
        if self.policy == "shadow":
            return np.full(len(entity_ids), -1, dtype=np.int64)
        return buckets(entity_ids, self.salt)

    def arms_of(self, bucket_column: np.ndarray) -> np.ndarray:
        """The arm index of every bucket (0 for -1, shadow's one arm)."""
        if self.policy == "shadow":
            return np.zeros(len(bucket_column), dtype=np.int64)
        return np.searchsorted(self.bounds, bucket_column, side="right")

    def assign(self, entity_ids: Sequence[str]) -> np.ndarray:
        """The arm index of every event."""
        return self.arms_of(self.buckets(entity_ids))
