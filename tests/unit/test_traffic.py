"""Traffic policies: entity buckets and arms, the split in the roles, the spec block, canary
decisions and per-arm metrics (exact against scikit-learn)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

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


def _counted_labels(leader: tuple[int, int, int, int], cand: tuple[int, int, int, int]
                    ) -> list[dict]:
    """Canary-arm records with the confusion counts (tp, fn, fp, tn) of each model on the
    same events: the first ``tp + fn`` events (of both models) are positive."""
    pos = leader[0] + leader[1]
    assert pos == cand[0] + cand[1] and sum(leader) == sum(cand)

    def labels(tp: int, fn: int, fp: int, tn: int) -> list[int]:
        return [1] * tp + [0] * fn + [1] * fp + [0] * tn

    out = []
    for ref, lab in ((LEAD, labels(*leader)), (CAND, labels(*cand))):
        for i, d in enumerate(lab):
            out.append({"model_id": ref.model_id, "version": ref.version, "event_id": f"e{i}",
                        "event_time": 1 + i, "score": 0.9 if d else 0.1, "label": d,
                        "outcome": int(i < pos), "arm": "canary", "served": ref == CAND})
    return out


#: the leader on 100 canary-arm events (30 positive): f1 40/60 = 0.667, error rate 0.20
LEADER_COUNTS = (20, 10, 10, 60)


@pytest.mark.parametrize(("cand_counts", "named", "not_named"), [
    # f1 30/50 = 0.600 (drop 0.067 > 0.05), error rate 0.20 (no increase)
    ((15, 15, 5, 65), "f1 drop 0.0667 > max_drop 0.05", "max_error_increase 0.02;"),
    # f1 50/73 = 0.685 (better), error rate 0.23 (increase 0.03 > 0.02)
    ((25, 5, 18, 52), "error rate increase 0.0300 > max_error_increase 0.02",
     "> max_drop"),
])
def test_either_bound_alone_rolls_the_canary_back_and_the_reason_names_it(
        cand_counts, named, not_named):
    roles = _roles(canary(LEAD, CAND, 500, since=0))
    window = arm_window(_counted_labels(LEADER_COUNTS, cand_counts), "canary", 0, HOUR)
    out = decide_traffic(POLICY, roles, window, now_ms=HOUR)
    assert out.action == "rollback" and out.traffic["arm_labels"] == 100
    assert named in out.reason and not_named not in out.reason
    # the same evidence with the crossed bound relaxed (and min_labels reached): a step
    relaxed = POLICY.model_copy(update={"max_drop": 0.1, "max_error_increase": 0.05,
                                        "min_labels": 100})
    assert decide_traffic(relaxed, roles, window, now_ms=HOUR).action == "step"


AB = TrafficSpec(policy="ab", arms=[{"name": "a", "model": "lead", "weight": 1},
                                    {"name": "b", "model": "cand", "weight": 3}],
                 interval="1h")


def test_an_ab_policy_starts_its_arms_then_keeps_them():
    empty = arm_window([], "canary", 0, 0)
    start = decide_traffic(AB, _roles(), empty, now_ms=HOUR + 7)
    assert (start.action, start.chosen, start.kind) == ("start", None, "traffic")
    assert start.reason == "ab split started: a=lead v1, b=cand v2"
    roles = apply_traffic(AB, _roles(), start.to_record(), now_ms=HOUR + 9)
    assert roles.traffic == ab([("a", LEAD, 1), ("b", CAND, 3)], since=HOUR + 7)
    assert [a.weight for a in roles.traffic.arms] == [2500, 7500]
    assert start.decision_id in roles.reason
    keep = decide_traffic(AB, roles, empty, now_ms=2 * HOUR)
    assert (keep.action, keep.reason) == ("keep", "ab split running")
    assert apply_traffic(AB, roles, keep.to_record(), now_ms=2 * HOUR) is None
    # a canary left in the roles is replaced by the ab arms
    canaried = _roles(canary(LEAD, CAND, 500, since=0))
    assert decide_traffic(AB, canaried, empty, now_ms=HOUR).action == "start"


def test_an_ab_arm_whose_model_is_not_scoring_keeps_shadow():
    roles = initial_roles("s", LEAD, [OTHER], at=0, by="t")  # no "cand"
    out = decide_traffic(AB, roles, arm_window([], "canary", 0, 0), now_ms=HOUR)
    assert out.action == "keep" and out.chosen is None
    assert out.reason == "ab not started: cand score nothing (neither leader nor challenger)"
    assert apply_traffic(AB, roles, out.to_record(), now_ms=HOUR) is None


@pytest.mark.parametrize("kind", ["canary start", "canary step", "ab start"])
def test_a_decision_applied_again_later_gives_the_same_split(kind):
    """After a crash the recorded decision is applied again at another time: the split
    (and its ``since``, the decision's evaluated time) is the one the first attempt made."""
    evaluated = 2 * HOUR + 123
    if kind == "ab start":
        policy, roles, window = AB, _roles(), arm_window([], "canary", 0, 0)
    elif kind == "canary start":
        policy, roles, window = POLICY, _roles(), arm_window([], "canary", 0, 0)
    else:
        policy, roles = POLICY, _roles(canary(LEAD, CAND, 500, since=HOUR))
        window = arm_window(_arm_labels(400, cand_edge=2.0, seed=2, since=HOUR), "canary",
                            HOUR, 2 * HOUR)
    record = decide_traffic(policy, roles, window, now_ms=evaluated).to_record()
    assert record["action"] == kind.split()[1]
    first = apply_traffic(policy, roles, record, now_ms=evaluated + 50)
    later = apply_traffic(policy, roles, record, now_ms=evaluated + 5 * HOUR)
    assert first.traffic is not None and first.traffic.since == evaluated
    assert later.traffic == first.traffic
    assert later == replace(first, updated_time=evaluated + 5 * HOUR)


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


#: the splits of the per-arm test and, for each, the model deciding in each arm
PER_ARM_SPLITS = {
    "canary": (canary(LEAD, CAND, 3_000, since=0), {"canary": CAND, "leader": LEAD}),
    "ab": (ab([("a", LEAD, 1), ("b", OTHER, 2), ("c", CAND, 1)], since=0),
           {"a": LEAD, "b": OTHER, "c": CAND}),
}


@pytest.mark.parametrize("split", sorted(PER_ARM_SPLITS))
def test_per_arm_metrics_equal_scikit_learn_on_the_arms_events(split):
    traffic, deciders = PER_ARM_SPLITS[split]
    plan = ArmPlan.of(traffic, [LEAD, OTHER, CAND], salt="m")
    rng = np.random.default_rng(7)
    join, book = JoinState(label_window_ms=10**9), MetricsBook(last_n=10**6, last_ms=10**12)
    expected: dict[str, list[tuple[int, int, float]]] = {arm: [] for arm in deciders}
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
        assert (served["policy"], served["decided_by"]["model_id"]) == (
            split, deciders[served["arm"]].model_id)
        expected[served["arm"]].append((y, served["label"], served["score"]))
    snap = {(r["model_id"], r["arm"], r["window"]): r for r in book.snapshot("ns", 1)}
    for arm, model in deciders.items():
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
    # one arm record per arm, of the model deciding there; the per-model records are whole
    assert {(k[0], k[1]) for k in snap if k[1] is not None} == {
        (m.model_id, arm) for arm, m in deciders.items()}
    assert snap[(LEAD.model_id, None, "cumulative")]["n_labels"] == 3000
