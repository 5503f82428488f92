"""A `precog worker` killed -9 in the middle of a promotion or traffic decision, on the real
stack.

The worker's lifecycle agent evaluates a ``best-recent`` policy on seeded labelled evidence
(the challenger clearly better). ``PRECOG_LIFECYCLE_FAULT_PAUSE_AFTER_RECORD`` makes the
controller wait after it recorded the decision and before it applied it; the test kills the
process -9 there (its own process, by pid), restarts the worker without the hook, and
proves: one decision record for the interval (topic and index), one promotion (the roles'
revision moved once, its reason names the decision), nothing more on later ticks. The same
for a canary's step up (``traffic: canary``, evaluated by the agent's traffic timer).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml
from precog.services.lifecycle import recent_decisions
from precog.services.model_control import decode_roles, publish_roles, read_roles

from precog.avro import Codec
from precog.io.kafka import read_to_end
from precog.lifecycle.canary import traffic_decision_id, window_end
from precog.lifecycle.policy import decision_id, window_bounds
from precog.roles import canary, set_traffic
from precog.settings import Settings
from precog.spec import PromotionSpec, TrafficSpec, load_spec
from precog.workers import WorkerProcess
from tests.e2e.helpers import wait_for
from tests.integration.test_traffic import _produce_arm_labels
from tests.lifecycle_evidence import HOUR, LGBM, LOGREG, produce_labels

POLICY = {"policy": "best-recent", "metric": "f1", "window": "2d", "interval": "1h",
          "min_labels": 500, "margin": 0.01, "bootstrap_samples": 300, "cooldown": "0s"}
TICK = {"PRECOG_LIFECYCLE_TICK_SECONDS": "2", "PRECOG_WORKER_SESSION_TIMEOUT": "6"}


CANARY = {"policy": "canary", "candidate": "fraud-logreg", "steps": [5, 25, 100],
          "min_labels": 200, "rollback_min_labels": 50, "max_drop": 0.05,
          "max_error_increase": 0.02, "interval": "1h", "salt": "fault"}


def _spec_with_policy(settings: Settings, tmp_path: Path, key: str = "promotion",
                      policy: dict[str, Any] = POLICY) -> Path:
    """The namespace's spec file with ``policy`` as its ``key`` block (what the worker loads)."""
    raw = yaml.safe_load(Path(settings.spec).read_text())
    raw[key] = policy
    path = tmp_path / f"spec-{key}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _clear_of_the_interval_boundary(margin_s: float = 75.0) -> int:
    """Now, at least ``margin_s`` before the next hour: the whole scenario is one interval."""
    now = int(time.time() * 1000)
    left = HOUR - now % HOUR
    if left < margin_s * 1000:
        time.sleep(left / 1000 + 1)
        now = int(time.time() * 1000)
    return now


def _history(settings: Settings, spec_name: str) -> list[Any]:
    """Every roles record of the spec on the model-control topic (not compacted this soon)."""
    out = []
    for m in read_to_end(settings, settings.topic("model-control"), "t-roles-history"):
        roles = decode_roles(m.value())
        if roles is not None and roles.spec == spec_name:
            out.append(roles)
    return out


def _decisions_on_topic(settings: Settings) -> list[dict[str, Any]]:
    codec = Codec.for_schema("decision")
    return [codec.decode(m.value())
            for m in read_to_end(settings, settings.topic("decisions"), "t-decisions")]


def _wait_for_log(worker: WorkerProcess, text: str, timeout: float) -> None:
    def seen() -> bool:
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_tail()}"
        return text in worker.log_path.read_text(errors="replace")

    assert wait_for(seen, timeout=timeout, every=0.2), (
        f"no {text!r} in the worker's log within {timeout:.0f} s:\n{worker.log_tail()}")


def _killed_after_recording(s: Settings, tmp_path: Path, did: str) -> float:
    """Run a worker with the fault hook until it recorded decision ``did``, kill it -9 (its
    own pid's group); the monotonic time of the kill."""
    worker = WorkerProcess(s, tmp_path, extra_env={
        **TICK, "PRECOG_LIFECYCLE_FAULT_PAUSE_AFTER_RECORD": "600"})
    try:
        worker.wait_healthy()
        _wait_for_log(worker, f"FAULT HOOK: decision {did} recorded", timeout=60)
    finally:
        worker.stop(signal.SIGKILL)
    assert worker.proc.returncode == -signal.SIGKILL
    return time.monotonic()


def _restarted_until_applied(s: Settings, tmp_path: Path, spec_name: str, revision: int,
                             killed_at: float) -> float:
    """Restart the worker without the hook until the roles move past ``revision``, then five
    more ticks of the same interval; seconds from the kill to the change."""
    again = WorkerProcess(s, tmp_path, extra_env=TICK)
    try:
        again.wait_healthy()
        applied = wait_for(lambda: read_roles(s, spec_name).revision > revision,
                           timeout=60, every=0.5)
        recovered_s = time.monotonic() - killed_at
        time.sleep(5 * 2)
        alive = again.proc.poll() is None
    finally:
        again.stop()
    assert alive, again.log_tail()
    assert applied, f"the recorded decision was not applied:\n{again.log_tail()}"
    return recovered_s


def _recorded_and_applied_once(settings: Settings, spec_name: str, revision: int,
                               did: str) -> dict[str, Any]:
    """One roles change after ``revision``, one decision ``did`` on the topic and in the
    index (for fraud-logreg v1); the decision's document."""
    changes = [r for r in _history(settings, spec_name) if r.revision > revision]
    assert [r.revision for r in changes] == [revision + 1]
    assert [d["decision_id"] for d in _decisions_on_topic(settings)] == [did]
    (doc,) = recent_decisions(settings, spec_name)
    assert doc["decision_id"] == did and doc["chosen_model"] == "fraud-logreg v1"
    return doc


def test_kill9_between_recording_and_applying_a_decision_promotes_once(
        settings: Settings, trained: Any, tmp_path: Path):
    started = time.monotonic()
    before = read_roles(settings, trained.name)
    assert (before.leader, before.challengers) == (LGBM, (LOGREG,))
    now = _clear_of_the_interval_boundary()
    produce_labels(settings, 1500, better=LOGREG, now=now, seed=1)
    s = settings.model_copy(update={"spec": _spec_with_policy(settings, tmp_path)})
    spec = load_spec(s.spec)
    assert spec.promotion == PromotionSpec(**POLICY)
    did = decision_id(spec.name, window_bounds(spec.promotion, now)[1])

    # 1. the worker decides, records, and is killed -9 before it applies
    killed_at = _killed_after_recording(s, tmp_path, did)
    assert read_roles(settings, spec.name).revision == before.revision  # not applied
    (doc,) = recent_decisions(settings, spec.name)
    assert doc["decision_id"] == did and doc["action"] == "promote"
    assert doc["roles_revision"] == before.revision

    # 2. the restarted worker finds the recorded decision and applies it, once
    recovered_s = _restarted_until_applied(s, tmp_path, spec.name, before.revision, killed_at)

    after = read_roles(settings, spec.name)
    assert after.revision == before.revision + 1
    assert (after.leader, after.challengers) == (LOGREG, (LGBM,))
    assert did in after.reason
    doc = _recorded_and_applied_once(settings, spec.name, before.revision, did)
    cand = doc["candidates"][0]
    assert cand["status"] == "supported" and cand["n"] == 1500
    print(f"kill -9 mid-decision: applied {recovered_s:.1f} s after the kill;"
          f" wall {time.monotonic() - started:.1f} s")


def test_kill9_between_recording_and_applying_a_canary_step_steps_once(
        settings: Settings, trained: Any, tmp_path: Path):
    started = time.monotonic()
    now = _clear_of_the_interval_boundary()
    s = settings.model_copy(update={"spec": _spec_with_policy(settings, tmp_path, "traffic",
                                                              CANARY)})
    spec = load_spec(s.spec)
    assert spec.traffic == TrafficSpec(**CANARY)
    end = window_end(spec.traffic, now)
    did = traffic_decision_id(spec.name, end)
    # a 5% canary of LOGREG since two hours before the interval, with 250 labels in its arm
    # (min_labels 200) on which it is better than the leader: the decision is a step to 25%
    trained_roles = read_roles(settings, trained.name)
    assert (trained_roles.leader, trained_roles.challengers) == (LGBM, (LOGREG,))
    since = end - 2 * HOUR
    before = set_traffic(trained_roles, canary(LGBM, LOGREG, 500, since=since, step=0),
                         at=now, by="test", reason="canary at 5%")
    publish_roles(settings, before)
    _produce_arm_labels(settings, 250, start=since, cand_edge=2.5, seed=1)

    # 1. the worker's traffic timer decides, records, and is killed -9 before it applies
    killed_at = _killed_after_recording(s, tmp_path, did)
    assert read_roles(settings, spec.name) == before  # not applied
    (doc,) = recent_decisions(settings, spec.name)
    assert (doc["decision_id"], doc["kind"], doc["action"]) == (did, "traffic", "step")
    assert doc["roles_revision"] == before.revision
    assert (doc["traffic"]["to_percent"], doc["traffic"]["arm_labels"]) == (25.0, 250)

    # 2. the restarted worker finds the recorded step and applies it, once
    recovered_s = _restarted_until_applied(s, tmp_path, spec.name, before.revision, killed_at)

    after = read_roles(settings, spec.name)
    assert after.revision == before.revision + 1 and did in after.reason
    assert (after.leader, after.challengers) == (LGBM, (LOGREG,))
    # the split the decision made: 25% from the decision's evaluated time, not the restart's
    assert after.traffic == canary(LGBM, LOGREG, 2500, since=doc["evaluated_time"], step=1)
    doc = _recorded_and_applied_once(settings, spec.name, before.revision, did)
    assert doc["candidates"][0]["status"] == "holds"
    print(f"kill -9 mid-traffic-decision: applied {recovered_s:.1f} s after the kill;"
          f" wall {time.monotonic() - started:.1f} s")
