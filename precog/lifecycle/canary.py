"""Traffic decisions: start a split, step a canary up, promote it, or roll it back.

:func:`decide_traffic` is pure: given the spec's ``traffic`` block, the roles (with their
live split) and the joined labels of the canary arm since its current step, it returns a
:class:`~precog.lifecycle.policy.Decision` of kind ``traffic`` with the evidence;
:func:`apply_traffic` turns a recorded decision into the next roles, so a decision found
after a restart is applied exactly as it was made: the new split's ``since`` is the
decision's ``evaluated_time``, not the time it is applied, so applying it again (after a
crash, at another time) gives the same split.

The canary's evidence is paired: every model scores every event, so on the canary arm's
events the candidate's served decisions are compared with the leader's shadow decisions on
the *same* events. Rules, evaluated in this order once per ``interval``:

* **rollback** (from ``rollback_min_labels`` arm labels on): the candidate's metric is below
  the leader's by more than ``max_drop``, or its error rate (share of wrong decisions) above
  the leader's by more than ``max_error_increase``. The split ends and the candidate leaves
  the challengers (so the policy does not start it again);
* **step** (from ``min_labels`` arm labels on, metric defined): the next of ``steps``;
  the step to 100% is the promotion (:func:`precog.roles.promote`), which ends the split;
* otherwise **keep**, with the reason.

Without a split, ``canary`` starts one on the candidate at ``steps[0]``; ``ab`` starts the
spec's arms; ``shadow`` ends a split left in the roles.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from precog.lifecycle.evidence import MetricSpec, compare
from precog.lifecycle.policy import Candidate, Decision, LabelledWindow
from precog.roles import (
    BUCKETS,
    CANARY_ARM,
    ModelRef,
    Roles,
    Traffic,
    ab,
    canary,
    promote,
    remove_challenger,
    set_traffic,
)
from precog.spec import TrafficSpec, parse_duration

BY = "precog lifecycle"


def traffic_decision_id(spec: str, window_end: int) -> str:
    return hashlib.sha256(f"traffic|{spec}|{window_end}".encode()).hexdigest()[:20]


def window_end(policy: TrafficSpec, now_ms: int) -> int:
    """The evaluation's interval boundary (one decision per spec and interval)."""
    interval = parse_duration(policy.interval)
    return now_ms - now_ms % interval


def candidate_of(policy: TrafficSpec, roles: Roles) -> ModelRef | None:
    """The challenger a canary starts on: the newest version of ``candidate`` (or the newest
    challenger added when it is null)."""
    if policy.candidate is None:
        return roles.challengers[-1] if roles.challengers else None
    versions = [c for c in roles.challengers if c.model_id == policy.candidate]
    return max(versions, key=lambda r: r.version) if versions else None


def _scoring_version(roles: Roles, model_id: str) -> ModelRef | None:
    if roles.leader.model_id == model_id:
        return roles.leader
    versions = [c for c in roles.challengers if c.model_id == model_id]
    return max(versions, key=lambda r: r.version) if versions else None


def arm_window(records: Iterable[Mapping[str, Any]], arm: str, start: int, end: int
               ) -> LabelledWindow:
    """The joined labels of ``arm``'s events (``labeled.v2`` ``arm``) in ``[start, end)``."""
    return LabelledWindow.from_records((r for r in records if r.get("arm") == arm), start, end)


def _percent(weight: int) -> float:
    return 100.0 * weight / BUCKETS


def _evidence(policy: TrafficSpec, traffic: Traffic, window: LabelledWindow, leader: ModelRef
              ) -> tuple[Candidate, dict[str, Any], float, float]:
    """The candidate's paired evidence on the arm: (candidate record, traffic evidence,
    metric drop, error-rate increase)."""
    cand = traffic.arms[0].model
    y, lp, cp = window.paired(leader, cand)
    n = len(y)
    comp = compare(MetricSpec(policy.metric), y, lp, cp, test="mcnemar") if n else None
    nan = float("nan")
    lerr = float(np.mean(lp.label != y)) if n else nan
    cerr = float(np.mean(cp.label != y)) if n else nan
    drop = -comp.gain if comp is not None else nan
    increase = cerr - lerr
    worse = n >= policy.rollback_min_labels and (drop > policy.max_drop
                                                 or increase > policy.max_error_increase)
    status = "worse" if worse else ("holds" if n >= policy.min_labels else "too-few-labels")
    value, lead = (comp.challenger_value, comp.leader_value) if comp else (nan, nan)
    text = (f"on {n} canary-arm events: {policy.metric} {_fmt(value)}"
            f" vs leader {_fmt(lead)} (drop {_fmt(drop)}, bound"
            f" {policy.max_drop}), error rate {_fmt(cerr)} vs {_fmt(lerr)} (increase"
            f" {_fmt(increase)}, bound {policy.max_error_increase})")
    evidence = {"arm": CANARY_ARM, "step": traffic.step,
                "from_percent": _percent(traffic.arms[0].weight),
                "to_percent": _percent(traffic.arms[0].weight), "since": traffic.since,
                "arm_labels": n, "leader_error_rate": lerr, "error_rate": cerr,
                "max_drop": policy.max_drop, "max_error_increase": policy.max_error_increase}
    return Candidate(cand, status, text, comp), evidence, drop, increase


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.4f}"


def decide_traffic(policy: TrafficSpec, roles: Roles, window: LabelledWindow, *, now_ms: int
                   ) -> Decision:
    """The traffic decision at ``now_ms`` (module docstring); ``window`` holds the canary
    arm's labels since ``roles.traffic.since`` (:func:`arm_window`)."""
    end = window_end(policy, now_ms)
    traffic = roles.traffic
    common = dict(decision_id=traffic_decision_id(roles.spec, end), spec=roles.spec,
                  policy=policy.policy, evaluated_time=now_ms,
                  window_start=traffic.since if traffic else end, window_end=end,
                  roles_revision=roles.revision, leader=roles.leader, metric=policy.metric,
                  margin=policy.max_drop, test="bound", alpha=0.0, kind="traffic")
    none = {"arm": CANARY_ARM, "step": -1, "from_percent": 0.0, "to_percent": 0.0,
            "since": now_ms, "arm_labels": 0, "leader_error_rate": float("nan"),
            "error_rate": float("nan"), "max_drop": policy.max_drop,
            "max_error_increase": policy.max_error_increase}
    if policy.policy == "shadow":
        if traffic is None:
            return _decision(common, "keep", "shadow: the leader decides", None, none)
        return _decision(common, "end", f"traffic policy shadow: the {traffic.policy} split"
                         " ends", traffic.candidate, none)
    if policy.policy == "ab":
        if traffic is not None and traffic.policy == "ab":
            return _decision(common, "keep", "ab split running", None, none)
        missing = [a.model for a in policy.arms if _scoring_version(roles, a.model) is None]
        if missing:
            return _decision(common, "keep", f"ab not started: {', '.join(missing)} score"
                             " nothing (neither leader nor challenger)", None, none)
        return _decision(common, "start", "ab split started: " + ", ".join(
            f"{a.name}={_scoring_version(roles, a.model)}" for a in policy.arms), None, none)
    if traffic is None or traffic.policy != "canary":
        cand = candidate_of(policy, roles)
        if cand is None:
            return _decision(common, "keep", "canary not started: no candidate challenger"
                             + (f" of {policy.candidate}" if policy.candidate else ""), None, none)
        return _decision(common, "start", f"canary {cand} started at {policy.steps[0]:g}%",
                         cand, {**none, "step": 0, "to_percent": float(policy.steps[0])})
    cand_rec, evidence, drop, increase = _evidence(policy, traffic, window, roles.leader)
    cand = traffic.arms[0].model
    if cand_rec.status == "worse":
        crossed = "; ".join(_crossed(policy, drop, increase))
        return _decision(common, "rollback", f"canary {cand} rolled back ({crossed}):"
                         f" {cand_rec.reason}", cand, {**evidence, "step": -1,
                                                       "to_percent": 0.0}, cand_rec)
    if cand_rec.status == "too-few-labels":
        return _decision(common, "keep", f"canary {cand} kept at {evidence['from_percent']:g}%:"
                         f" {evidence['arm_labels']} arm labels < min_labels"
                         f" {policy.min_labels}", cand, evidence, cand_rec)
    if not math.isfinite(drop) or not math.isfinite(increase):
        return _decision(common, "keep", f"canary {cand} kept: {policy.metric} undefined on"
                         " the arm's events", cand, evidence, cand_rec)
    nxt = min(traffic.step + 1, len(policy.steps) - 1)
    to = float(policy.steps[nxt])
    action = "promote" if to >= 100 else "step"
    why = (f"canary {cand} promoted to leader" if action == "promote"
           else f"canary {cand} stepped up to {to:g}%")
    return _decision(common, action, f"{why}: {cand_rec.reason}", cand,
                     {**evidence, "step": nxt, "to_percent": to}, cand_rec)


def _crossed(policy: TrafficSpec, drop: float, increase: float) -> list[str]:
    """The rollback bounds the candidate crossed, each with its value."""
    out = []
    if drop > policy.max_drop:
        out.append(f"{policy.metric} drop {_fmt(drop)} > max_drop {policy.max_drop}")
    if increase > policy.max_error_increase:
        out.append(f"error rate increase {_fmt(increase)} > max_error_increase"
                   f" {policy.max_error_increase}")
    return out


def _decision(common: dict[str, Any], action: str, reason: str, chosen: ModelRef | None,
              evidence: dict[str, Any], cand: Candidate | None = None) -> Decision:
    return Decision(action=action, reason=reason, chosen=chosen,
                    candidates=() if cand is None else (cand,), traffic=evidence, **common)


def apply_traffic(policy: TrafficSpec, roles: Roles, decision: Mapping[str, Any], *,
                  now_ms: int) -> Roles | None:
    """The roles after a recorded traffic decision, or None when it changes nothing.

    The split depends on the decision only (its ``since`` is the decision's
    ``evaluated_time``: the step's evidence ended at ``window_end``, no later than that, so
    no labelled event is evidence for two steps); ``now_ms`` is only the revision's time.
    """
    action = decision["action"]
    since = int(decision["evaluated_time"])
    reason = f"decision {decision['decision_id']}: {decision['reason']}"[:1000]
    chosen = (ModelRef.from_record(dict(decision["chosen"])) if decision.get("chosen")
              else None)
    ev = decision.get("traffic") or {}
    if action == "end":
        return set_traffic(roles, None, at=now_ms, by=BY, reason=reason)
    if action == "start" and policy.policy == "ab":
        arms = [(a.name, _scoring_version(roles, a.model), a.weight) for a in policy.arms]
        return set_traffic(roles, ab([(n, m, w) for n, m, w in arms if m is not None],
                                     since=since), at=now_ms, by=BY, reason=reason)
    if chosen is None:
        return None
    if action in ("start", "step"):
        weight = int(round(float(ev["to_percent"]) * BUCKETS / 100))
        return set_traffic(roles, canary(roles.leader, chosen, weight, since=since,
                                         step=int(ev["step"])), at=now_ms, by=BY, reason=reason)
    if action == "promote":
        return promote(roles, chosen, at=now_ms, by=BY, reason=reason)
    if action == "rollback":
        # one revision: without the candidate the split is invalid, so it ends with it
        return remove_challenger(roles, chosen, at=now_ms, by=BY, reason=reason)
    return None
