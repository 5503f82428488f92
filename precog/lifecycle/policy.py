"""The ``best-recent`` promotion policy: one decision per evaluation, with its evidence.

:func:`decide` is pure: given the spec's roles, the joined labels of the window and the
models that failed a health check, it returns a :class:`Decision` -- promote one
challenger, or keep the leader -- that carries every number it was based on. The
controller (:mod:`precog.lifecycle.controller`) reads the inputs, records the decision and
applies it.

A decision's id is a hash of the spec and the end of its window, and the window ends on an
interval boundary, so an evaluation repeated after a restart has the same id and the same
bootstrap seed, hence the same evidence: a decision is made once per interval.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from precog.lifecycle.evidence import Comparison, MetricSpec, Predictions, compare
from precog.roles import ModelRef, Roles
from precog.spec import PromotionSpec, parse_duration


def metric_of(policy: PromotionSpec) -> MetricSpec:
    return MetricSpec(policy.metric, policy.recall, policy.cost_fp, policy.cost_fn)


def window_bounds(policy: PromotionSpec, now_ms: int) -> tuple[int, int]:
    """``[start, end)`` of the evaluation at ``now_ms``: the end is the last interval boundary."""
    interval = parse_duration(policy.interval)
    end = now_ms - now_ms % interval
    return end - parse_duration(policy.window), end


def decision_id(spec: str, window_end: int) -> str:
    return hashlib.sha256(f"promotion|{spec}|{window_end}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class LabelledWindow:
    """The joined labels of one window, events by models.

    ``outcome[i]`` is event ``event_ids[i]``'s outcome; ``by_model[ref]`` holds, for the
    events that model scored, their indices into ``event_ids`` with its scores and labels.
    """

    start: int
    end: int
    event_ids: tuple[str, ...]
    outcome: np.ndarray
    by_model: Mapping[ModelRef, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], start: int, end: int
                     ) -> LabelledWindow:
        """From decoded ``labeled.v1`` records; those with event time outside the window are
        left out, and a record repeated for the same event and model counts once."""
        index: dict[str, int] = {}
        outcome: list[int] = []
        cols: dict[ModelRef, dict[int, tuple[float, int]]] = {}
        for r in records:
            if not start <= int(r["event_time"]) < end:
                continue
            i = index.setdefault(str(r["event_id"]), len(index))
            if i == len(outcome):
                outcome.append(int(r["outcome"]))
            ref = ModelRef(str(r["model_id"]), int(r["version"]))
            cols.setdefault(ref, {}).setdefault(i, (float(r["score"]), int(r["label"])))
        by_model = {}
        for ref, rows in cols.items():
            idx = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
            order = np.argsort(idx)
            vals = list(rows.values())
            score = np.array([v[0] for v in vals], dtype=np.float64)[order]
            label = np.array([v[1] for v in vals], dtype=np.int64)[order]
            by_model[ref] = (idx[order], score, label)
        return cls(start, end, tuple(index), np.array(outcome, dtype=np.int64), by_model)

    def labelled(self, ref: ModelRef) -> int:
        got = self.by_model.get(ref)
        return 0 if got is None else len(got[0])

    def paired(self, a: ModelRef, b: ModelRef) -> tuple[np.ndarray, Predictions, Predictions]:
        """Outcomes and both models' predictions on the events both scored."""
        ia, sa, la = self.by_model.get(a, _EMPTY)
        ib, sb, lb = self.by_model.get(b, _EMPTY)
        common, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
        return (self.outcome[common], Predictions(sa[pa], la[pa]), Predictions(sb[pb], lb[pb]))


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))


@dataclass(frozen=True)
class Candidate:
    """One challenger's evidence against the leader, and what it meant."""

    ref: ModelRef
    status: str  # supported | not-better | too-few-labels | unhealthy
    reason: str
    comparison: Comparison | None = None

    def to_record(self) -> dict[str, Any]:
        c = self.comparison
        nan = float("nan")
        return {
            "model_id": self.ref.model_id,
            "version": self.ref.version,
            "status": self.status,
            "reason": self.reason,
            "n": c.n if c else 0,
            "positives": c.positives if c else 0,
            "leader_value": c.leader_value if c else nan,
            "value": c.challenger_value if c else nan,
            "gain": c.gain if c else nan,
            "statistic": c.statistic if c else nan,
            "p_value": c.p_value if c else nan,
            "ci_low": c.ci_low if c else nan,
            "leader_only_right": c.leader_only_right if c else 0,
            "challenger_only_right": c.challenger_only_right if c else 0,
        }


@dataclass(frozen=True)
class Decision:
    """Promote one challenger, or keep the leader (or a traffic decision,
    :mod:`precog.lifecycle.canary`): the ``decision.v2`` record."""

    decision_id: str
    spec: str
    policy: str
    action: str  # promote | keep
    reason: str
    evaluated_time: int
    window_start: int
    window_end: int
    roles_revision: int
    leader: ModelRef
    chosen: ModelRef | None
    metric: str
    margin: float
    test: str
    alpha: float
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)
    kind: str = "promotion"
    traffic: dict[str, Any] | None = None  # kind traffic: decision.v2 TrafficEvidence

    def to_record(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "kind": self.kind,
            "spec": self.spec,
            "policy": self.policy,
            "action": self.action,
            "reason": self.reason,
            "evaluated_time": self.evaluated_time,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "roles_revision": self.roles_revision,
            "leader": self.leader.to_record(),
            "chosen": None if self.chosen is None else self.chosen.to_record(),
            "metric": self.metric,
            "margin": self.margin,
            "test": self.test,
            "alpha": self.alpha,
            "candidates": [c.to_record() for c in self.candidates],
            "traffic": self.traffic,
        }


def _judge(policy: PromotionSpec, window: LabelledWindow, leader: ModelRef, ref: ModelRef,
           unhealthy: Mapping[ModelRef, str], seed: int) -> Candidate:
    if ref in unhealthy:
        return Candidate(ref, "unhealthy", unhealthy[ref])
    y, lp, cp = window.paired(leader, ref)
    if len(y) < policy.min_labels:
        return Candidate(ref, "too-few-labels",
                         f"{len(y)} paired labelled events < min_labels {policy.min_labels}")
    comp = compare(metric_of(policy), y, lp, cp, test=policy.test, margin=policy.margin,
                   alpha=policy.alpha, samples=policy.bootstrap_samples, seed=seed)
    if comp.supports(policy.margin, policy.alpha):
        return Candidate(ref, "supported", _evidence_text(policy, comp), comp)
    return Candidate(ref, "not-better", _evidence_text(policy, comp), comp)


def _evidence_text(policy: PromotionSpec, c: Comparison) -> str:
    text = (f"{policy.metric} {c.challenger_value:.4f} vs leader {c.leader_value:.4f}"
            f" (gain {c.gain:+.4f}, margin {policy.margin}) on {c.n} events, p={c.p_value:.4f}")
    if c.test == "bootstrap":
        return text + f", {1 - policy.alpha:.0%} lower bound {c.ci_low:+.4f}"
    return text + (f", McNemar b={c.leader_only_right} c={c.challenger_only_right}")


def decide(
    policy: PromotionSpec,
    roles: Roles,
    window: LabelledWindow,
    *,
    now_ms: int,
    unhealthy: Mapping[ModelRef, str] | None = None,
) -> Decision:
    """Promote the challenger with the largest supported gain, or keep the leader (and why)."""
    did = decision_id(roles.spec, window.end)
    seed = int(did[:8], 16)
    unhealthy = unhealthy or {}
    cands = tuple(_judge(policy, window, roles.leader, ref, unhealthy, seed)
                  for ref in roles.challengers)
    supported = [c for c in cands if c.status == "supported"]
    cooldown_until = roles.updated_time + parse_duration(policy.cooldown)
    chosen: ModelRef | None = None
    if not roles.challengers:
        reason = "no challengers"
    elif not supported:
        reason = "no challenger beats the leader: " + "; ".join(
            f"{c.ref}: {c.status}" for c in cands)
    elif now_ms < cooldown_until:
        reason = (f"cool-down: the roles changed at {roles.updated_time}, no promotion before"
                  f" {cooldown_until}")
    else:
        best = max(supported, key=lambda c: c.comparison.gain if c.comparison else -np.inf)
        chosen = best.ref
        reason = f"{best.ref} beats {roles.leader}: {best.reason}"
    return Decision(
        decision_id=did, spec=roles.spec, policy=policy.policy,
        action="promote" if chosen else "keep", reason=reason, evaluated_time=now_ms,
        window_start=window.start, window_end=window.end, roles_revision=roles.revision,
        leader=roles.leader, chosen=chosen, metric=policy.metric, margin=policy.margin,
        test=policy.test, alpha=policy.alpha, candidates=cands,
    )
