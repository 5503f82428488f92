"""A `precog worker` killed -9 in the middle of a promotion decision, on the real stack.

The worker's lifecycle agent evaluates a ``best-recent`` policy on seeded labelled evidence
(the challenger clearly better). ``PRECOG_LIFECYCLE_FAULT_PAUSE_AFTER_RECORD`` makes the
controller wait after it recorded the decision and before it applied it; the test kills the
process -9 there (its own process, by pid), restarts the worker without the hook, and
proves: one decision record for the interval (topic and index), one promotion (the roles'
revision moved once, its reason names the decision), nothing more on later ticks.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml
from precog.services.lifecycle import recent_decisions
from precog.services.model_control import decode_roles, read_roles

from precog.avro import Codec
from precog.io.kafka import read_to_end
from precog.lifecycle.policy import decision_id, window_bounds
from precog.settings import Settings
from precog.spec import PromotionSpec, load_spec
from precog.workers import WorkerProcess
from tests.e2e.helpers import wait_for
from tests.lifecycle_evidence import HOUR, LGBM, LOGREG, produce_labels

POLICY = {"policy": "best-recent", "metric": "f1", "window": "2d", "interval": "1h",
          "min_labels": 500, "margin": 0.01, "bootstrap_samples": 300, "cooldown": "0s"}
TICK = {"PRECOG_LIFECYCLE_TICK_SECONDS": "2", "PRECOG_WORKER_SESSION_TIMEOUT": "6"}


def _spec_with_policy(settings: Settings, tmp_path: Path) -> Path:
    """The namespace's spec file with the promotion policy above (what the worker loads)."""
    raw = yaml.safe_load(Path(settings.spec).read_text())
    raw["promotion"] = POLICY
    path = tmp_path / "spec-best-recent.yaml"
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

    wait_for(seen, timeout=timeout, every=0.2)


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
    worker = WorkerProcess(s, tmp_path, extra_env={
        **TICK, "PRECOG_LIFECYCLE_FAULT_PAUSE_AFTER_RECORD": "600"})
    try:
        worker.wait_healthy()
        _wait_for_log(worker, f"FAULT HOOK: decision {did} recorded", timeout=60)
    finally:
        worker.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    assert worker.proc.returncode == -signal.SIGKILL
    assert read_roles(settings, spec.name).revision == before.revision  # not applied
    (doc,) = recent_decisions(settings, spec.name)
    assert doc["decision_id"] == did and doc["action"] == "promote"
    assert doc["roles_revision"] == before.revision

    # 2. the restarted worker finds the recorded decision and applies it, once
    again = WorkerProcess(s, tmp_path, extra_env=TICK)
    try:
        again.wait_healthy()
        wait_for(lambda: read_roles(settings, spec.name).revision > before.revision,
                 timeout=60, every=0.5)
        recovered_s = time.monotonic() - killed_at
        time.sleep(5 * 2)  # five more ticks of the same interval
        alive = again.proc.poll() is None
    finally:
        again.stop()
    assert alive, again.log_tail()

    after = read_roles(settings, spec.name)
    assert after.revision == before.revision + 1
    assert (after.leader, after.challengers) == (LOGREG, (LGBM,))
    assert did in after.reason
    changes = [r for r in _history(settings, spec.name) if r.revision > before.revision]
    assert [r.revision for r in changes] == [before.revision + 1]
    on_topic = _decisions_on_topic(settings)
    assert [d["decision_id"] for d in on_topic] == [did]
    (doc,) = recent_decisions(settings, spec.name)
    assert doc["decision_id"] == did and doc["chosen_model"] == "fraud-logreg v1"
    cand = doc["candidates"][0]
    assert cand["status"] == "supported" and cand["n"] == 1500
    print(f"kill -9 mid-decision: applied {recovered_s:.1f} s after the kill;"
          f" wall {time.monotonic() - started:.1f} s")
