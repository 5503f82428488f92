"""Traffic policies on the real stack: a canary served by `precog serve` (arms stable per
entity, the served fraction near its weight, the decision and the prediction record follow
the arm), and the canary controller stepping up and rolling back through recorded
decisions, from {ns}.labeled, applied once."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from confluent_kafka import Producer
from precog.services import lifecycle
from precog.services.lifecycle import evaluate_traffic, recent_decisions
from precog.services.model_control import read_roles
from precog.services.runtime import now_ms

from precog.avro import Codec
from precog.io.kafka import read_to_end
from precog.roles import ModelRef, canary
from precog.settings import Settings
from precog.spec import TrafficSpec, load_spec
from precog.traffic import bucket
from tests.conftest import ROOT, unique_namespace
from tests.e2e.helpers import read_topic
from tests.integration.test_lifecycle import _cli
from tests.integration.test_serve import AUTH, KEY, _event, _post, serving

pytestmark = pytest.mark.integration

LGBM, LOGREG = ModelRef("fraud-lgbm", 1), ModelRef("fraud-logreg", 1)
HOUR = 3_600_000
SALT = "it-salt"
#: entities scored through `precog serve` under a 30% canary, and the tolerance of the
#: served fraction: 0.04 is 4 binomial standard deviations (sqrt(0.3 * 0.7 / 1200) = 0.013)
ENTITIES, WEIGHT, TOLERANCE = 1200, 0.30, 0.04


def _trained(tmp: Path, traffic: TrafficSpec) -> tuple[Settings, Any]:
    from precog.pipelines.train import train

    from precog.namespace import setup_namespace
    from precog.simulate import write_history

    base = Settings()
    original = base.spec if base.spec.is_absolute() else ROOT / base.spec
    data = yaml.safe_load(original.read_text())
    data["traffic"] = traffic.model_dump()
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    s = Settings(namespace=unique_namespace(), spec=spec_path, registry_dir=tmp / "registry",
                 serve={"api_keys": KEY, "timeout": 5.0})
    spec = load_spec(spec_path)
    assert spec.traffic == traffic
    setup_namespace(s, spec)
    write_history(tmp / "history", 3000, seed=11, end_ms=1_760_000_000_000, progress=False,
                  spec=spec)
    train(s, spec, tmp / "history", seed=3, index=False)
    return s, spec


def _drop(s: Settings) -> None:
    from precog.namespace import drop_namespace

    try:
        drop_namespace(s)
    except Exception as exc:
        warnings.warn(f"cleanup of namespace {s.namespace} failed: {exc}", stacklevel=1)


@pytest.fixture
def canary_ns(stack: Any, tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    s, spec = _trained(tmp_path, TrafficSpec(policy="canary", salt=SALT))
    yield s, spec
    _drop(s)


def test_serve_answers_follow_a_stable_per_entity_canary_arm(canary_ns):
    settings, spec = canary_ns
    roles = read_roles(settings, spec.name)
    assert (roles.leader, roles.challengers) == (LGBM, (LOGREG,))
    # the split is changed at runtime by `precog models traffic` (a new roles revision)
    shown = _cli(settings, "models", "traffic", "--canary", "fraud-logreg:1", "--percent",
                 str(WEIGHT * 100))
    assert "traffic canary canary fraud-logreg v1 30%, leader fraud-lgbm v1 70%" in shown
    live = read_roles(settings, spec.name)
    assert live.revision == roles.revision + 1
    assert live.traffic == canary(LGBM, LOGREG, 3000, since=live.traffic.since)
    with serving(settings) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v2/models/{spec.name}", headers=AUTH).json()[
                "parameters"]["roles_revision"] < live.revision:
            assert time.monotonic() < deadline, "the canary was not reloaded"
            time.sleep(0.2)
        t0 = now_ms() - 2 * HOUR
        entities = [f"card-{900_000 + i}" for i in range(ENTITIES)]
        answers: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        for rnd in range(2):  # every entity twice, in other batches and another order
            order = entities if rnd == 0 else entities[::-1]
            for i in range(0, len(order), 100):
                batch = [_event(e, rnd + 1, t0 + rnd * 60_000) for e in order[i:i + 100]]
                res = _post(url, batch)
                assert res.status_code == 200, res.text
                for ev, ans in zip(batch, res.json(), strict=True):
                    answers[ev["card_id"]].append(ans)

    canary_entities = 0
    for e, (first, second) in answers.items():
        expected = "canary" if bucket(e, SALT) < WEIGHT * 10_000 else "leader"
        assert first["decision"]["arm"] == second["decision"]["arm"] == expected
        canary_entities += expected == "canary"
        for ans in (first, second):
            pred, decision = ans["prediction"], ans["decision"]
            decider = pred["challengers"][0] if expected == "canary" else pred["leader"]
            assert decider["model_id"] == (LOGREG if expected == "canary" else LGBM).model_id
            assert (decision["policy"], decision["model_id"]) == ("canary",
                                                                 decider["model_id"])
            assert (decision["label"], decision["score"]) == (decider["label"],
                                                              decider["score"])
            assert pred["served"]["bucket"] == bucket(e, SALT)
            assert pred["served"]["decided_by"] == {"model_id": decider["model_id"],
                                                    "version": decider["version"]}
    share = canary_entities / ENTITIES
    assert abs(share - WEIGHT) < TOLERANCE, share

    # the published records are the answers' records, with the served arm
    ids = {a["event_id"]: a["prediction"] for pair in answers.values() for a in pair}
    codec = Codec.for_schema("prediction")
    msgs = read_topic(settings, settings.topic("predictions"), len(ids), timeout=60, settle=1)
    got = {codec.decode(m.value())["event_id"]: codec.decode(m.value()) for m in msgs}
    assert got.keys() >= ids.keys()
    assert all(got[i]["served"] == ids[i]["served"] for i in ids)
    assert "traffic shadow" in _cli(settings, "models", "traffic", "--shadow")
    assert read_roles(settings, spec.name).traffic is None


def _produce_arm_labels(settings: Settings, n: int, *, start: int, cand_edge: float,
                        seed: int) -> None:
    """labeled.v2 records of ``n`` canary-arm events from ``start`` (event and record
    times), the leader scoring in shadow and LOGREG's decisions served."""
    rng = np.random.default_rng(seed)
    codec = Codec.for_schema("labeled")
    producer = Producer(settings.kafka.producer_config(acks="all"))
    y = (rng.random(n) < 0.3).astype(int)
    for i in range(n):
        t = start + 1000 + i * 1000
        for ref, edge, served in ((LGBM, 1.5, False), (LOGREG, cand_edge, True)):
            s = float(1 / (1 + np.exp(-(edge * (2 * y[i] - 1) + rng.normal()))))
            rec = {"model_id": ref.model_id, "version": ref.version,
                   "role": "leader" if ref == LGBM else "challenger",
                   "prediction_id": f"p{seed}-{i}", "event_id": f"e{seed}-{i}",
                   "entity_id": f"card-{i}", "source": "transactions", "event_time": t,
                   "scored_time": t, "outcome_time": t + 500, "score": s,
                   "label": int(s >= 0.5), "outcome": int(y[i]), "label_latency_ms": 500,
                   "features": None, "policy": "canary", "arm": "canary", "served": served}
            producer.produce(settings.topic("labeled"), key=ref.model_id.encode(),
                             value=codec.encode(rec), timestamp=t + 500)
    assert producer.flush(30) == 0


@pytest.fixture
def controlled(stack: Any, tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    policy = TrafficSpec(policy="canary", candidate="fraud-logreg", steps=[5, 25, 100],
                         min_labels=200, rollback_min_labels=50, max_drop=0.05,
                         max_error_increase=0.02, interval="1h")
    s, spec = _trained(tmp_path, policy)
    yield s, spec
    _drop(s)


def test_a_canary_steps_up_on_evidence_and_a_degraded_one_rolls_back(controlled, monkeypatch):
    settings, spec = controlled
    now = now_ms()
    base = now - now % HOUR - 6 * HOUR  # three intervals, all in the past
    rev0 = read_roles(settings, spec.name).revision

    started = evaluate_traffic(settings, spec, now_ms=base + 100)
    assert started.made_now and started.applied and started.decision["action"] == "start"
    roles = read_roles(settings, spec.name)
    assert roles.revision == rev0 + 1 and roles.traffic.candidate == LOGREG
    assert roles.traffic.arms[0].weight == 500 and roles.traffic.since == base + 100

    # a better candidate: 250 labels in its arm (min_labels 200); the controller crashes
    # after recording the step and before publishing the roles
    _produce_arm_labels(settings, 250, start=base + 100, cand_edge=2.5, seed=1)

    def crash(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("killed before the roles were published")

    monkeypatch.setattr(lifecycle, "publish_roles", crash)
    with pytest.raises(RuntimeError):
        evaluate_traffic(settings, spec, now_ms=base + HOUR + 100)
    assert read_roles(settings, spec.name).revision == rev0 + 1
    monkeypatch.undo()
    again = evaluate_traffic(settings, spec, now_ms=base + HOUR + 200)
    assert not again.made_now and again.applied and again.decision["action"] == "step"
    ev = again.decision["traffic"]
    assert (ev["from_percent"], ev["to_percent"], ev["arm_labels"]) == (5.0, 25.0, 250)
    roles = read_roles(settings, spec.name)
    assert roles.revision == rev0 + 2 and roles.traffic.arms[0].weight == 2500
    # the step's split dates from the recorded decision (the crashed evaluation), not from
    # the evaluation that applied it
    assert again.decision["evaluated_time"] == base + HOUR + 100
    assert roles.traffic.since == base + HOUR + 100
    assert again.decision["decision_id"] in roles.reason
    # the same interval once more: nothing changes
    once = evaluate_traffic(settings, spec, now_ms=base + HOUR + 300)
    assert not once.applied and read_roles(settings, spec.name).revision == rev0 + 2

    # the candidate degrades: rolled back on the first evaluation after 60 arm labels
    # (rollback_min_labels 50)
    _produce_arm_labels(settings, 60, start=base + HOUR + 200, cand_edge=-0.5, seed=2)
    back = evaluate_traffic(settings, spec, now_ms=base + 2 * HOUR + 100)
    assert back.applied and back.decision["action"] == "rollback"
    ev = back.decision["traffic"]
    assert ev["arm_labels"] == 60 and ev["to_percent"] == 0.0
    assert ev["error_rate"] > ev["leader_error_rate"] + 0.02
    assert "error rate increase" in back.decision["reason"]
    roles = read_roles(settings, spec.name)
    assert roles.traffic is None and roles.leader == LGBM and LOGREG not in roles.challengers

    # every decision with its evidence, in the index and on the topic
    docs = recent_decisions(settings, spec.name)
    assert [d["action"] for d in docs] == ["rollback", "step", "start"]
    assert all(d["kind"] == "traffic" and d["policy"] == "canary" for d in docs)
    assert docs[1]["candidates"][0]["status"] == "holds"
    assert docs[0]["candidates"][0]["status"] == "worse"
    on_topic = [Codec.for_schema("decision").decode(m.value())
                for m in read_to_end(settings, settings.topic("decisions"), "t-read")]
    assert sorted(r["action"] for r in on_topic) == ["rollback", "start", "step"]
