"""Retraining triggers: each fires on its evidence, none within the cool-down."""

from __future__ import annotations

import pytest
from precog.pipelines.retrain_triggers import fired

from precog.roles import ModelRef
from precog.spec import RetrainingSpec

pytestmark = pytest.mark.unit

LEAD = ModelRef("lgbm", 2)
H = 3_600_000


def _alert(kind, t, **kw):
    return {"kind": kind, "detected_time": t, "alert_id": f"{kind}{t}", "message": "m",
            "model_id": "lgbm", "version": 2, **kw}


def test_concept_drift_of_the_leader_only_after_the_last_run():
    p = RetrainingSpec(triggers=["concept_drift"], cooldown="1h")
    assert fired(p, LEAD, 10 * H, 5 * H, [_alert("concept_drift", 4 * H)], []) is None
    assert fired(p, LEAD, 10 * H, 5 * H, [_alert("concept_drift", 6 * H, version=1)],
                 []) is None  # another version
    t = fired(p, LEAD, 10 * H, 5 * H, [_alert("concept_drift", 6 * H)], [])
    assert t.name == "concept_drift" and "concept_drift21600000" in t.evidence


def test_data_drift_on_selected_features():
    p = RetrainingSpec(triggers=["data_drift"], data_drift_features=["amount"], cooldown="1h")
    other = _alert("data_drift", 6 * H, feature="count_1h")
    assert fired(p, LEAD, 10 * H, None, [other], []) is None
    assert fired(p, LEAD, 10 * H, None, [other, _alert("data_drift", 7 * H, feature="amount")],
                 []).name == "data_drift"
    anyf = RetrainingSpec(triggers=["data_drift"], cooldown="1h")
    assert fired(anyf, LEAD, 10 * H, None, [other], []).name == "data_drift"


def test_performance_below_the_threshold_on_enough_labels():
    p = RetrainingSpec(triggers=["performance"], min_f1=0.5, min_labels=100, cooldown="1h")
    low_few = {"model_id": "lgbm", "version": 2, "f1": 0.2, "n_labels": 50, "window": "last_1h"}
    assert fired(p, LEAD, 10 * H, None, [], [low_few]) is None
    low = {**low_few, "n_labels": 500}
    assert fired(p, LEAD, 10 * H, None, [], [low]).name == "performance"
    assert fired(p, LEAD, 10 * H, None, [], [{**low, "f1": 0.6}]) is None


def test_estimated_performance_reads_the_estimated_windows_only():
    p = RetrainingSpec(triggers=["estimated_performance"], min_estimated_f1=0.4,
                       min_labels=100, cooldown="1h")
    est = {"model_id": "lgbm", "version": 2, "f1": 0.3, "n_labels": 800,
           "window": "estimated_1h", "event_time": 7 * H}
    t = fired(p, LEAD, 10 * H, None, [], [est])
    assert t.name == "estimated_performance"
    assert t.evidence.startswith("leader lgbm v2 estimated F1 0.3000 < 0.4 on 800 predictions")
    # a realised window, another version, too few predictions, or above the threshold: no
    assert fired(p, LEAD, 10 * H, None, [], [{**est, "window": "realised_1h"}]) is None
    assert fired(p, LEAD, 10 * H, None, [], [{**est, "window": "last_1h"}]) is None
    assert fired(p, LEAD, 10 * H, None, [], [{**est, "version": 1}]) is None
    assert fired(p, LEAD, 10 * H, None, [], [{**est, "n_labels": 99}]) is None
    assert fired(p, LEAD, 10 * H, None, [], [{**est, "f1": 0.41}]) is None
    # each trigger has its own threshold: the realised one does not fire on an estimate
    both = RetrainingSpec(triggers=["performance"], min_f1=0.9, min_labels=100, cooldown="1h")
    assert fired(both, LEAD, 10 * H, None, [], [est]) is None


def test_cooldown_holds_every_trigger_and_the_schedule_runs_first():
    p = RetrainingSpec(triggers=["schedule", "concept_drift"], schedule="1d", cooldown="2h")
    drift = [_alert("concept_drift", 9 * H + 1)]  # after the last run
    assert fired(p, LEAD, 10 * H, 9 * H, drift, []) is None  # within the cool-down
    assert fired(p, LEAD, 12 * H, 9 * H, drift, []).name == "concept_drift"
    assert fired(p, LEAD, 40 * H, 9 * H, drift, []).name == "schedule"
    assert fired(p, LEAD, 1, None, [], []).evidence == "first run"


def test_unknown_drift_features_are_refused():
    from precog.spec import SPEC_DIR, load_spec

    spec = load_spec(SPEC_DIR / "transactions.yaml")
    with pytest.raises(ValueError, match="retraining.data_drift_features"):
        type(spec).model_validate({**spec.model_dump(),
                                   "retraining": {"data_drift_features": ["nope"]}})
