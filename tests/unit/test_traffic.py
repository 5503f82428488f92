"""Traffic policies: entity buckets and arms, the split in the roles, the spec block, canary
decisions and per-arm metrics (exact against scikit-learn)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import sklearn.metrics as skm
import yaml
from precog.services.model_control import decode_roles, encode_roles

from precog.errors import ConfigError
from precog.lifecycle.canary import apply_traffic, arm_window, decide_traffic
from precog.monitor.join import JoinState
from precog.monitor.metrics import MetricsBook
from precog.roles import (
    BUCKETS,
    ModelRef,
    Roles,
    Traffic,
    ab,
    canary,
    initial_roles,
    promote,
    remove_challenger,
    set_traffic,
)
from precog.spec import SPEC_DIR, TrafficSpec, load_spec
from precog.traffic import ArmPlan, bucket, buckets

pytestmark = pytest.mark.unit

LEAD, CAND, OTHER = ModelRef("lead", 1), ModelRef("cand", 2), ModelRef("other", 1)
ENTITIES = [f"card-{i}" for i in np.random.default_rng(20261202).integers(0, 10**9, 100_000)]
#: the tolerance of a served fraction over 100,000 seeded entities: 0.5 points (the
#: binomial standard deviation at 5% is 0.07 points, at 50% 0.16)
TOLERANCE = 0.005


def _roles(traffic: Traffic | None = None) -> Roles:
    r = initial_roles("s", LEAD, [OTHER, CAND], at=0, by="t")
    return r if traffic is None else set_traffic(r, traffic, at=1, by="t")


# -- buckets and arms -----------------------------------------------------------------
def test_the_bucket_is_a_keyed_blake2b_of_the_entity_mod_10000():
    digest = hashlib.blake2b(b"card-42", digest_size=8, key=b"pepper").digest()
    assert bucket("card-42", "pepper") == int.from_bytes(digest, "little") % 10_000
    assert buckets(["a", "b", "a"], "x").tolist() == [bucket("a", "x"), bucket("b", "x"),
                                                      bucket("a", "x")]


def test_an_entity_always_gets_the_same_arm():
    plan = ArmPlan.of(canary(LEAD, CAND, 2_500, since=0), [LEAD, CAND], salt="s")
    first = plan.assign(ENTITIES[:5000])
    # in other batches, another order, another process's plan: the same arms
    again = ArmPlan.of(canary(LEAD, CAND, 2_500, since=9), [LEAD, CAND], salt="s")
    order = np.random.default_rng(1).permutation(5000)
    assert (again.assign([ENTITIES[i] for i in order]) == first[order]).all()
    # the same entity inside one batch
    doubled = plan.assign(ENTITIES[:100] * 3).reshape(3, 100)
    assert (doubled == doubled[0]).all()


@pytest.mark.parametrize("percent", [1, 5, 25, 50])
def test_the_served_fraction_is_within_half_a_point_of_the_canary_weight(percent):
    plan = ArmPlan.of(canary(LEAD, CAND, percent * 100, since=0), [LEAD, CAND], salt="seed")
    share = float(np.mean(plan.assign(ENTITIES) == 0))  # arm 0 is the canary
    assert abs(share - percent / 100) < TOLERANCE


def test_ab_fractions_follow_the_weights():
    t = ab([("a", LEAD, 1), ("b", OTHER, 2), ("c", CAND, 1)], since=0)
    assert [a.weight for a in t.arms] == [2500, 5000, 2500]
    arms = ArmPlan.of(t, [LEAD, OTHER, CAND]).assign(ENTITIES)
    for i, w in enumerate((0.25, 0.5, 0.25)):
        assert abs(float(np.mean(arms == i)) - w) < TOLERANCE


def test_a_step_up_only_adds_entities_to_the_canary():
    at5 = ArmPlan.of(canary(LEAD, CAND, 500, since=0), [LEAD, CAND]).assign(ENTITIES) == 0
    at25 = ArmPlan.of(canary(LEAD, CAND, 2500, since=0), [LEAD, CAND]).assign(ENTITIES) == 0
    assert at25[at5].all() and at25.sum() > at5.sum()


def test_another_salt_reshuffles_the_entities():
    a = ArmPlan.of(canary(LEAD, CAND, 5000, since=0), [LEAD, CAND], salt="a").assign(ENTITIES)
    b = ArmPlan.of(canary(LEAD, CAND, 5000, since=0), [LEAD, CAND], salt="b").assign(ENTITIES)
    assert abs(float(np.mean(a == b)) - 0.5) < 0.01


def test_arm_model_indices_follow_the_model_set_order():
    plan = ArmPlan.of(canary(LEAD, CAND, 500, since=0), [LEAD, OTHER, CAND])
    assert plan.model_index == (2, 0) and plan.names == ("canary", "leader")
    with pytest.raises(KeyError):
        ArmPlan.of(canary(LEAD, CAND, 500, since=0), [LEAD, OTHER])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: canary(LEAD, LEAD, 500, since=0), "is the leader"),
    (lambda: canary(LEAD, CAND, 0, since=0), "weight is in"),
    (lambda: canary(LEAD, CAND, BUCKETS, since=0), "weight is in"),
    (lambda: ab([], since=0), "positive weights"),
    (lambda: Traffic("ab", ()), "distinct names"),
    (lambda: Traffic("split", ()), "one of canary, ab"),
])
def test_bad_splits_are_one_line_errors(make, message):
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


# -- the split in the roles -------------------------------------------------------------
def test_the_split_round_trips_through_the_model_control_record():
    r = _roles(canary(LEAD, CAND, 500, since=123, step=0))
    assert r.revision == 2 and r.traffic.candidate == CAND
    assert decode_roles(encode_roles(r)) == r
    assert decode_roles(encode_roles(_roles())).traffic is None


def test_a_split_ends_when_its_model_leaves_the_roles():
    r = _roles(canary(LEAD, CAND, 500, since=0))
    assert remove_challenger(r, OTHER, at=2, by="t").traffic is not None
    gone = remove_challenger(r, CAND, at=2, by="t")
    assert gone.traffic is None and gone.revision == r.revision + 1
    assert "traffic back to shadow" in gone.reason
    assert promote(r, CAND, at=2, by="t").traffic is None  # the candidate leads now


def test_set_traffic_refuses_a_canary_of_the_leader_arm_or_an_unknown_model():
    r = _roles()
    with pytest.raises(ConfigError, match="neither leader nor challenger"):
        set_traffic(r, canary(LEAD, ModelRef("x", 1), 500, since=0), at=1, by="t")
    with pytest.raises(ConfigError, match="leader arm must be the leader"):
        set_traffic(r, canary(OTHER, CAND, 500, since=0), at=1, by="t")


# -- the spec block ---------------------------------------------------------------------
def _spec_with(tmp_path, traffic):
    data = yaml.safe_load((SPEC_DIR / "transactions.yaml").read_text())
    data["traffic"] = traffic
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_the_default_is_shadow_and_a_canary_block_parses(tmp_path):
    assert load_spec(SPEC_DIR / "transactions.yaml").traffic.policy == "shadow"
    spec = _spec_with(tmp_path, {"policy": "canary", "candidate": "fraud-logreg",
                                 "steps": [10, 50, 100], "max_drop": 0.1, "interval": "5m"})
    assert spec.traffic.steps == [10.0, 50.0, 100.0] and spec.traffic.candidate == "fraud-logreg"
    ab_spec = _spec_with(tmp_path, {"policy": "ab", "arms": [
        {"name": "a", "model": "fraud-lgbm", "weight": 1},
        {"name": "b", "model": "fraud-logreg", "weight": 3}]})
    assert [a.weight for a in ab_spec.traffic.arms] == [1.0, 3.0]


@pytest.mark.parametrize(("traffic", "names"), [
    ({"policy": "canary", "steps": [5, 25]}, "traffic.steps"),
    ({"policy": "canary", "steps": [25, 5, 100]}, "traffic.steps"),
    ({"policy": "canary", "candidate": "nope"}, "traffic.candidate"),
    ({"policy": "canary", "interval": "soon"}, "traffic.interval"),
    ({"policy": "canary", "max_drop": -1}, "traffic.max_drop"),
    ({"policy": "canery"}, "traffic.policy"),
    ({"policy": "ab", "arms": [{"name": "a", "model": "fraud-lgbm", "weight": 1}]},
     "traffic.arms"),
    ({"policy": "ab", "arms": [{"name": "a", "model": "x", "weight": 1},
                               {"name": "b", "model": "fraud-lgbm", "weight": 1}]},
     "traffic.arms"),
    ({"policy": "shadow", "arms": [{"name": "a", "model": "fraud-lgbm", "weight": 1}]},
     "traffic.arms"),
    ({"policy": "canary", "steps": [5, 100], "wieght": 3}, "traffic.wieght"),
])
def test_bad_traffic_blocks_are_one_line_errors_naming_the_option(tmp_path, traffic, names):
    with pytest.raises(ConfigError) as info:
        _spec_with(tmp_path, traffic)
    assert names in str(info.value) and "\n" not in str(info.value)


# -- canary decisions ---------------------------------------------------------------------
POLICY = TrafficSpec(policy="canary", candidate="cand", steps=[5, 25, 100], min_labels=200,
                     rollback_min_labels=50, max_drop=0.05, max_error_increase=0.02,
                     interval="1h")
HOUR = 3_600_000


def _arm_labels(n: int, *, cand_edge: float, seed: int, since: int = 0) -> list[dict]:
    """labeled.v2 records of ``n`` canary-arm events: leader and candidate on each."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    out = []
    for i in range(n):
        for ref, edge, served in ((LEAD, 2.0, False), (CAND, cand_edge, True)):
            s = float(1 / (1 + np.exp(-(edge * (2 * y[i] - 1) + rng.normal()))))
            out.append({"model_id": ref.model_id, "version": ref.version, "event_id": f"e{i}",
                        "event_time": since + 1 + i, "score": s, "label": int(s >= 0.5),
                        "outcome": int(y[i]), "arm": "canary", "served": served})
    return out


def test_a_canary_starts_steps_up_and_is_promoted_at_100_percent():
    roles = _roles()
    start = decide_traffic(POLICY, roles, arm_window([], "canary", 0, 0), now_ms=HOUR)
    assert (start.action, start.chosen, start.traffic["to_percent"]) == ("start", CAND, 5.0)
    roles = apply_traffic(POLICY, roles, start.to_record(), now_ms=HOUR)
    assert roles.traffic.arms[0].weight == 500 and roles.traffic.since == HOUR

    few = _arm_labels(150, cand_edge=2.0, seed=1, since=HOUR)
    keep = decide_traffic(POLICY, roles, arm_window(few, "canary", HOUR, 2 * HOUR),
                          now_ms=2 * HOUR)
    assert keep.action == "keep" and "150 arm labels < min_labels 200" in keep.reason

    good = _arm_labels(400, cand_edge=2.0, seed=2, since=HOUR)
    step = decide_traffic(POLICY, roles, arm_window(good, "canary", HOUR, 2 * HOUR),
                          now_ms=2 * HOUR)
    assert step.action == "step" and step.traffic["to_percent"] == 25.0
    assert step.candidates[0].comparison.n == 400 and step.traffic["arm_labels"] == 400
    roles = apply_traffic(POLICY, roles, step.to_record(), now_ms=2 * HOUR)
    assert roles.traffic.arms[0].weight == 2500 and roles.traffic.step == 1

    more = _arm_labels(400, cand_edge=2.0, seed=3, since=2 * HOUR)
    final = decide_traffic(POLICY, roles, arm_window(more, "canary", 2 * HOUR, 3 * HOUR),
                           now_ms=3 * HOUR)
    assert final.action == "promote"
    roles = apply_traffic(POLICY, roles, final.to_record(), now_ms=3 * HOUR)
    assert roles.leader == CAND and roles.traffic is None and LEAD in roles.challengers


def test_a_bad_candidate_is_rolled_back_at_rollback_min_labels():
    roles = _roles(canary(LEAD, CAND, 500, since=0))
    bad = _arm_labels(50, cand_edge=-0.5, seed=4)  # worse than chance
    out = decide_traffic(POLICY, roles, arm_window(bad, "canary", 0, HOUR), now_ms=HOUR)
    assert out.action == "rollback" and out.traffic["to_percent"] == 0.0
    assert out.traffic["error_rate"] > out.traffic["leader_error_rate"] + 0.02
    after = apply_traffic(POLICY, roles, out.to_record(), now_ms=HOUR)
    assert after.traffic is None and CAND not in after.challengers
    assert after.revision == roles.revision + 1
    # 49 labels: not yet
    early = decide_traffic(POLICY, roles, arm_window(bad[:98], "canary", 0, HOUR),
                           now_ms=HOUR)
    assert early.action == "keep"


def test_labels_of_other_arms_and_before_the_step_are_not_evidence():
    roles = _roles(canary(LEAD, CAND, 500, since=HOUR))
    bad = _arm_labels(100, cand_edge=-0.5, seed=5)  # event times before `since`
    other = [{**r, "arm": "leader"} for r in _arm_labels(100, cand_edge=-0.5, seed=6,
                                                          since=HOUR)]
    out = decide_traffic(POLICY, roles, arm_window(bad + other, "canary", HOUR, 2 * HOUR),
                         now_ms=2 * HOUR)
    assert out.action == "keep" and out.traffic["arm_labels"] == 0


# -- per-arm metrics ---------------------------------------------------------------------
def _prediction(i: int, entity: str, plan: ArmPlan, scores: list[float]) -> dict:
    refs = (LEAD, OTHER, CAND)
    arm = int(plan.assign([entity])[0])
    k = plan.model_index[arm]
    models = [{"model_id": r.model_id, "version": r.version,
               "role": "leader" if j == 0 else "challenger", "score": s,
               "label": int(s >= 0.5), "threshold": 0.5, "artifact_sha256": "x"}
              for j, (r, s) in enumerate(zip(refs, scores, strict=True))]
    return {"prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": entity, "source": "s",
            "event_time": i, "scored_time": i, "leader": models[0], "challengers": models[1:],
            "features": [],
            "served": {"policy": plan.policy, "arm": plan.names[arm],
                       "decided_by": {"model_id": refs[k].model_id, "version": refs[k].version},
                       "score": scores[k], "label": int(scores[k] >= 0.5),
                       "bucket": int(plan.buckets([entity])[0])}}


def test_per_arm_metrics_equal_scikit_learn_on_the_arms_events():
    plan = ArmPlan.of(canary(LEAD, CAND, 3_000, since=0), [LEAD, OTHER, CAND], salt="m")
    rng = np.random.default_rng(7)
    join, book = JoinState(label_window_ms=10**9), MetricsBook(last_n=10**6, last_ms=10**12)
    expected: dict[str, list[tuple[int, int, float]]] = {"canary": [], "leader": []}
    for i in range(3000):
        entity = f"card-{rng.integers(0, 400)}"
        scores = rng.random(3).tolist()
        pred = _prediction(i, entity, plan, scores)
        book.observe_prediction(pred)
        join.on_prediction(pred)
        y = int(rng.random() < 0.4)
        for rec in join.on_outcome({"event_id": f"e{i}", "label": y, "event_time": i,
                                    "outcome_time": i + 10}).labeled:
            book.observe_labeled(rec)
        served = pred["served"]
        expected[served["arm"]].append((y, served["label"], served["score"]))
    snap = {(r["model_id"], r["arm"], r["window"]): r for r in book.snapshot("ns", 1)}
    for arm, model in (("canary", CAND), ("leader", LEAD)):
        y, d, s = (np.array(c) for c in zip(*expected[arm], strict=True))
        rec = snap[(model.model_id, arm, "cumulative")]
        assert rec["n_labels"] == len(y) > 500
        assert rec["accuracy"] == pytest.approx(skm.accuracy_score(y, d), abs=1e-12)
        assert rec["precision"] == pytest.approx(skm.precision_score(y, d), abs=1e-12)
        assert rec["recall"] == pytest.approx(skm.recall_score(y, d), abs=1e-12)
        assert rec["f1"] == pytest.approx(skm.f1_score(y, d), abs=1e-12)
        assert rec["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert rec["log_loss"] == pytest.approx(skm.log_loss(y, s), rel=1e-9)
        assert rec["label_coverage"] == 1.0
    # no arm record for a model that decided nowhere, and the per-model records are whole
    assert not any(k[0] == OTHER.model_id and k[1] is not None for k in snap)
    assert snap[(LEAD.model_id, None, "cumulative")]["n_labels"] == 3000
