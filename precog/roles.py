"""Leader and challenger roles of a pipeline's models, and the pure transitions between them.

A :class:`Roles` value is one record of ``schemas/model_control.v2.avsc``: the roles and
the live traffic split (:class:`Traffic`; None is ``shadow``, the leader decides). Every
transition returns a new value with ``revision + 1``; nothing here does I/O
(``services/model_control.py`` publishes and reads them). A transition that takes a model
of the split out of the roles ends the split (back to shadow), so the traffic never names
a model that does not score.

>>> r = initial_roles("fraud", ModelRef("lgbm", 1), [ModelRef("logreg", 1)], at=0, by="t")
>>> r = set_leader(r, ModelRef("lgbm", 2), at=1, by="t")
>>> r.revision, r.leader, r.previous_leaders
(2, ModelRef(model_id='lgbm', version=2), (ModelRef(model_id='lgbm', version=1),))
>>> rollback(r, at=2, by="t").leader
ModelRef(model_id='lgbm', version=1)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any

from precog.errors import ConfigError

#: entity buckets of a traffic split; a weight is a number of buckets (basis points)
BUCKETS = 10_000
CANARY_ARM, LEADER_ARM = "canary", "leader"


@dataclass(frozen=True, order=True)
class ModelRef:
    """One model version."""

    model_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.model_id} v{self.version}"

    def to_record(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "version": self.version}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ModelRef:
        return cls(str(rec["model_id"]), int(rec["version"]))


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the model version that decides for it, its buckets."""

    name: str
    model: ModelRef
    weight: int

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_record(), "weight": self.weight}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Arm:
        return cls(str(rec["name"]), ModelRef.from_record(rec["model"]), int(rec["weight"]))


@dataclass(frozen=True)
class Traffic:
    """The live traffic split of a spec (None in the roles: ``shadow``).

    ``step`` is the canary's index into the spec's ``traffic.steps``; ``since`` the time
    (epoch ms) the current weights took effect: the canary's evidence starts there.
    """

    policy: str
    arms: tuple[Arm, ...]
    step: int = 0
    since: int = 0

    def __post_init__(self) -> None:
        if self.policy not in ("canary", "ab"):
            raise ConfigError(f"traffic policy {self.policy!r}: one of canary, ab")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"traffic arms must have distinct names, got {names}")
        if any(a.weight < 0 for a in self.arms) or sum(a.weight for a in self.arms) != BUCKETS:
            raise ConfigError(f"traffic weights must be >= 0 and sum to {BUCKETS},"
                              f" got {[a.weight for a in self.arms]}")
        if self.policy == "canary" and names != [CANARY_ARM, LEADER_ARM]:
            raise ConfigError(f"a canary has the arms canary and leader, got {names}")

    @property
    def models(self) -> tuple[ModelRef, ...]:
        return tuple(a.model for a in self.arms)

    @property
    def candidate(self) -> ModelRef | None:
        """The canary's candidate (None for ``ab``)."""
        return self.arms[0].model if self.policy == "canary" else None

    def bounds(self) -> tuple[int, ...]:
        """The exclusive upper bucket of every arm, in arm order."""
        return tuple(accumulate(a.weight for a in self.arms))

    def arm_of_bucket(self, b: int) -> Arm:
        return self.arms[bisect_right(self.bounds(), b)]

    def to_record(self) -> dict[str, Any]:
        return {"policy": self.policy, "arms": [a.to_record() for a in self.arms],
                "step": self.step, "since": self.since}

    @classmethod
    def from_record(cls, rec: dict[str, Any] | None) -> Traffic | None:
        if rec is None:
            return None
        return cls(str(rec["policy"]), tuple(Arm.from_record(a) for a in rec["arms"]),
                   int(rec.get("step", 0)), int(rec.get("since", 0)))


def canary(leader: ModelRef, candidate: ModelRef, weight: int, *, since: int,
           step: int = 0) -> Traffic:
    """A canary giving ``weight`` of the ``BUCKETS`` buckets to ``candidate``."""
    if candidate == leader:
        raise ConfigError(f"{candidate} is the leader: a canary needs another model")
    if not 0 < weight < BUCKETS:
        raise ConfigError(f"a canary's weight is in (0, {BUCKETS}) buckets, got {weight}")
    return Traffic("canary", (Arm(CANARY_ARM, candidate, weight),
                              Arm(LEADER_ARM, leader, BUCKETS - weight)), step, since)


def ab(arms: Iterable[tuple[str, ModelRef, float]], *, since: int) -> Traffic:
    """An A/B split; weights are relative and rounded to buckets (the last arm takes the rest).

    >>> t = ab([("a", ModelRef("m", 1), 1), ("b", ModelRef("n", 1), 2)], since=0)
    >>> [a.weight for a in t.arms]
    [3333, 6667]
    """
    items = list(arms)
    total = float(sum(w for _, _, w in items))
    if not items or total <= 0:
        raise ConfigError("an ab split needs arms with positive weights")
    weights = [round(BUCKETS * w / total) for _, _, w in items[:-1]]
    weights.append(BUCKETS - sum(weights))
    return Traffic("ab", tuple(Arm(n, m, w) for (n, m, _), w in zip(items, weights,
                                                                         strict=True)), 0, since)



@dataclass(frozen=True)
class Roles:
    """Which versions score a spec: one leader decides, challengers score alongside."""

    spec: str
    revision: int
    leader: ModelRef
    challengers: tuple[ModelRef, ...] = ()
    previous_leaders: tuple[ModelRef, ...] = ()  # most recent first
    updated_time: int = 0
    updated_by: str = ""
    reason: str = ""
    traffic: Traffic | None = None  # None: shadow (the leader decides every event)

    @property
    def active(self) -> tuple[ModelRef, ...]:
        """Leader first, then challengers: every version that scores events."""
        return (self.leader, *self.challengers)

    def role_of(self, ref: ModelRef) -> str | None:
        """``"leader"``, ``"challenger"``, ``"previous-leader"`` or None."""
        if ref == self.leader:
            return "leader"
        if ref in self.challengers:
            return "challenger"
        if ref in self.previous_leaders:
            return "previous-leader"
        return None

    def to_record(self) -> dict[str, Any]:
        """The ``ModelControl`` Avro record."""
        return {
            "spec": self.spec,
            "revision": self.revision,
            "leader": self.leader.to_record(),
            "challengers": [c.to_record() for c in self.challengers],
            "previous_leaders": [p.to_record() for p in self.previous_leaders],
            "updated_time": self.updated_time,
            "updated_by": self.updated_by,
            "reason": self.reason,
            "traffic": None if self.traffic is None else self.traffic.to_record(),
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Roles:
        """From a decoded ``ModelControl`` record."""
        return cls(
            spec=rec["spec"],
            revision=int(rec["revision"]),
            leader=ModelRef.from_record(rec["leader"]),
            challengers=tuple(ModelRef.from_record(c) for c in rec.get("challengers", [])),
            previous_leaders=tuple(
                ModelRef.from_record(p) for p in rec.get("previous_leaders", [])
            ),
            updated_time=int(rec["updated_time"]),
            updated_by=rec.get("updated_by", ""),
            reason=rec.get("reason", ""),
            traffic=Traffic.from_record(rec.get("traffic")),
        )


def initial_roles(
    spec: str,
    leader: ModelRef,
    challengers: Iterable[ModelRef] = (),
    *,
    at: int,
    by: str,
    reason: str = "initial roles",
) -> Roles:
    """Revision 1 of a spec's roles.

    >>> initial_roles("s", ModelRef("a", 1), [ModelRef("a", 1)], at=0, by="t")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: a v1 cannot be both leader and challenger
    """
    chs = _unique(challengers)
    if leader in chs:
        raise ConfigError(f"{leader} cannot be both leader and challenger")
    return Roles(spec, 1, leader, chs, (), at, by, reason)


def set_leader(
    roles: Roles, ref: ModelRef, *, at: int, by: str, reason: str = ""
) -> Roles:
    """Make ``ref`` the leader; the old leader goes to the front of ``previous_leaders``.

    A challenger promoted to leader leaves the challengers.

    >>> r = initial_roles("s", ModelRef("a", 1), [ModelRef("b", 1)], at=0, by="t")
    >>> r2 = set_leader(r, ModelRef("b", 1), at=5, by="t")
    >>> r2.leader, r2.challengers, r2.previous_leaders
    (ModelRef(model_id='b', version=1), (), (ModelRef(model_id='a', version=1),))
    """
    if ref == roles.leader:
        raise ConfigError(f"{ref} is already the leader of {roles.spec}")
    return _next(
        roles,
        at,
        by,
        reason or f"set leader {ref}",
        leader=ref,
        challengers=tuple(c for c in roles.challengers if c != ref),
        previous_leaders=(roles.leader, *roles.previous_leaders),
    )


def add_challenger(
    roles: Roles, ref: ModelRef, *, at: int, by: str, reason: str = ""
) -> Roles:
    """Add ``ref`` to the end of the challengers.

    >>> r = initial_roles("s", ModelRef("a", 1), at=0, by="t")
    >>> add_challenger(r, ModelRef("a", 1), at=1, by="t")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: a v1 is the leader of s, not a possible challenger
    """
    if ref == roles.leader:
        raise ConfigError(f"{ref} is the leader of {roles.spec}, not a possible challenger")
    if ref in roles.challengers:
        raise ConfigError(f"{ref} is already a challenger of {roles.spec}")
    return _next(
        roles, at, by, reason or f"add challenger {ref}", challengers=(*roles.challengers, ref)
    )


def remove_challenger(
    roles: Roles, ref: ModelRef, *, at: int, by: str, reason: str = ""
) -> Roles:
    """Remove ``ref`` from the challengers."""
    if ref not in roles.challengers:
        listed = ", ".join(map(str, roles.challengers)) or "none"
        raise ConfigError(f"{ref} is not a challenger of {roles.spec} (challengers: {listed})")
    return _next(
        roles,
        at,
        by,
        reason or f"remove challenger {ref}",
        challengers=tuple(c for c in roles.challengers if c != ref),
    )


def promote(roles: Roles, ref: ModelRef, *, at: int, by: str, reason: str = "") -> Roles:
    """Make challenger ``ref`` the leader; the old leader stays on as a challenger.

    What a promotion policy does: the old leader keeps scoring, so the evidence can bring it
    back, and ``rollback`` restores it as leader.

    >>> r = initial_roles("s", ModelRef("a", 1), [ModelRef("b", 1), ModelRef("c", 1)], at=0, by="t")
    >>> r2 = promote(r, ModelRef("b", 1), at=5, by="t")
    >>> r2.leader, r2.challengers, r2.previous_leaders
    (ModelRef(model_id='b', version=1), (ModelRef(model_id='c', version=1), \
ModelRef(model_id='a', version=1)), (ModelRef(model_id='a', version=1),))
    """
    if ref not in roles.challengers:
        raise ConfigError(f"{ref} is not a challenger of {roles.spec}: only challengers are"
                          " promoted")
    rest = tuple(c for c in roles.challengers if c != ref)
    return _next(
        roles,
        at,
        by,
        reason or f"promote {ref}",
        leader=ref,
        challengers=_unique((*rest, roles.leader)),
        previous_leaders=_unique((roles.leader, *roles.previous_leaders)),
    )


def rollback(roles: Roles, *, at: int, by: str, reason: str = "") -> Roles:
    """Restore the most recent previous leader; the current leader leaves every role.

    >>> r = initial_roles("s", ModelRef("a", 1), at=0, by="t")
    >>> rollback(r, at=1, by="t")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: s has no previous leader to roll back to
    """
    if not roles.previous_leaders:
        raise ConfigError(f"{roles.spec} has no previous leader to roll back to")
    restored, *rest = roles.previous_leaders
    return _next(
        roles,
        at,
        by,
        reason or f"rollback from {roles.leader} to {restored}",
        leader=restored,
        challengers=tuple(c for c in roles.challengers if c != restored),
        previous_leaders=tuple(rest),
    )


def set_traffic(roles: Roles, traffic: Traffic | None, *, at: int, by: str,
                reason: str = "") -> Roles:
    """Change the traffic split (None: back to shadow).

    Every arm's model must score (leader or challenger); a canary's candidate must be a
    challenger and its other arm the leader.

    >>> r = initial_roles("s", ModelRef("a", 1), [ModelRef("b", 1)], at=0, by="t")
    >>> r2 = set_traffic(r, canary(ModelRef("a", 1), ModelRef("b", 1), 500, since=3), at=3, by="t")
    >>> r2.revision, r2.traffic.candidate, promote(r2, ModelRef("b", 1), at=4, by="t").traffic
    (2, ModelRef(model_id='b', version=1), None)
    >>> set_traffic(r, canary(ModelRef("a", 1), ModelRef("c", 1), 500, since=3), at=3, by="t")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: s: traffic arm canary: c v1 is neither leader nor challenger
    """
    if traffic is not None:
        problem = _traffic_problem(roles.leader, roles.challengers, traffic)
        if problem:
            raise ConfigError(f"{roles.spec}: {problem}")
    return _next(roles, at, by, reason or (f"traffic {traffic.policy}: " + ", ".join(
        f"{a.name} {a.model} {a.weight / BUCKETS:.2%}" for a in traffic.arms)
        if traffic is not None else "traffic shadow"), traffic=traffic)


def _traffic_problem(leader: ModelRef, challengers: tuple[ModelRef, ...],
                     traffic: Traffic) -> str:
    for a in traffic.arms:
        if a.model != leader and a.model not in challengers:
            return f"traffic arm {a.name}: {a.model} is neither leader nor challenger"
    if traffic.policy == "canary":
        if traffic.arms[1].model != leader:
            return f"a canary's leader arm must be the leader {leader}, not {traffic.arms[1].model}"
        if traffic.arms[0].model not in challengers:
            return f"a canary's candidate {traffic.arms[0].model} must be a challenger"
    return ""


def _next(roles: Roles, at: int, by: str, reason: str, **changes: Any) -> Roles:
    new = replace(
        roles,
        revision=roles.revision + 1,
        updated_time=at,
        updated_by=by,
        reason=reason,
        **changes,
    )
    if new.traffic is not None and _traffic_problem(new.leader, new.challengers, new.traffic):
        new = replace(new, traffic=None, reason=f"{reason}; traffic back to shadow")
    return new


def _unique(refs: Iterable[ModelRef]) -> tuple[ModelRef, ...]:
    return tuple(dict.fromkeys(refs))
