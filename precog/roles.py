"""Leader and challenger roles of a pipeline's models, and the pure transitions between them.

A :class:`Roles` value is one record of ``schemas/model_control.v1.avsc``. Every
transition returns a new value with ``revision + 1``; nothing here does I/O
(``services/model_control.py`` publishes and reads them).

>>> r = initial_roles("fraud", ModelRef("lgbm", 1), [ModelRef("logreg", 1)], at=0, by="t")
>>> r = set_leader(r, ModelRef("lgbm", 2), at=1, by="t")
>>> r.revision, r.leader, r.previous_leaders
(2, ModelRef(model_id='lgbm', version=2), (ModelRef(model_id='lgbm', version=1),))
>>> rollback(r, at=2, by="t").leader
ModelRef(model_id='lgbm', version=1)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from precog.errors import ConfigError


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


def _next(roles: Roles, at: int, by: str, reason: str, **changes: Any) -> Roles:
    return replace(
        roles,
        revision=roles.revision + 1,
        updated_time=at,
        updated_by=by,
        reason=reason,
        **changes,
    )


def _unique(refs: Iterable[ModelRef]) -> tuple[ModelRef, ...]:
    return tuple(dict.fromkeys(refs))
