"""The promotion policy on the real stack: decide from {ns}.labeled, record, apply once; a
challenger failing its health checks (registry sha256, coverage) is never promoted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from precog.services import lifecycle
from precog.services.lifecycle import evaluate, recent_decisions
from precog.services.model_control import read_roles
from typer.testing import CliRunner

from precog.avro import Codec
from precog.cli import app
from precog.io.kafka import read_to_end
from precog.registry import ModelRegistry
from precog.settings import Settings
from precog.spec import PromotionSpec, load_spec
from tests.lifecycle_evidence import HOUR, LGBM, LOGREG, produce_labels

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from precog.simulate import write_history

    out = tmp_path_factory.mktemp("history")
    write_history(out, 4000, seed=5, end_ms=1_760_000_000_000, progress=False)
    return out


def _env(settings: Settings) -> dict[str, str]:
    return {"PRECOG_NAMESPACE": settings.namespace,
            "PRECOG_REGISTRY_DIR": str(settings.registry_dir),
            "PRECOG_SPEC": str(settings.spec)}


def _cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=_env(settings))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_best_recent_promotes_once_records_everything_and_keeps_a_worse_model_out(
        settings, history, monkeypatch):
    _cli(settings, "train", "--history", str(history), "--seed", "3")
    roles = read_roles(settings, "transactions")
    assert (roles.leader, roles.challengers) == (LGBM, (LOGREG,))
    policy = PromotionSpec(policy="best-recent", metric="f1", window="2d", interval="1h",
                           min_labels=500, margin=0.01, bootstrap_samples=300, cooldown="0s")
    spec = load_spec(settings.spec).model_copy(update={"promotion": policy})
    now = int(time.time() * 1000)
    produce_labels(settings, 1500, better=LOGREG, now=now, seed=1)

    # a crash between recording the decision and publishing the roles
    def crash(*_a, **_k):
        raise RuntimeError("killed before the roles were published")

    monkeypatch.setattr(lifecycle, "publish_roles", crash)
    with pytest.raises(RuntimeError):
        evaluate(settings, spec, now_ms=now)
    assert read_roles(settings, "transactions").revision == roles.revision
    monkeypatch.undo()

    # the restarted controller finds the decision and applies it, without deciding again
    out = evaluate(settings, spec, now_ms=now + 1000)
    assert not out.made_now and out.applied
    assert out.decision["action"] == "promote"
    after = read_roles(settings, "transactions")
    assert after.leader == LOGREG and after.challengers == (LGBM,)
    assert after.revision == roles.revision + 1
    assert out.decision["decision_id"] in after.reason

    # and once more: nothing changes
    again = evaluate(settings, spec, now_ms=now + 2000)
    assert not again.applied and "not applied" in again.note
    assert read_roles(settings, "transactions").revision == after.revision

    # one decision document with the evidence, and its record on the topic
    (doc,) = recent_decisions(settings, "transactions")
    cand = doc["candidates"][0]
    assert (cand["model_id"], cand["status"], cand["n"]) == ("fraud-logreg", "supported", 1500)
    assert cand["gain"] > 0.01 and cand["ci_low"] > 0.01 and cand["p_value"] < 0.05
    assert doc["chosen_model"] == "fraud-logreg v1" and doc["namespace"] == settings.namespace
    on_topic = [Codec.for_schema("decision").decode(m.value())
                for m in read_to_end(settings, settings.topic("decisions"), "t-read")]
    assert {r["decision_id"] for r in on_topic} == {doc["decision_id"]}

    # the next interval: the old leader, now a challenger, is worse: the leader is kept
    kept = evaluate(settings, spec, now_ms=now + HOUR)
    assert kept.made_now and kept.decision["action"] == "keep" and not kept.applied
    assert kept.decision["candidates"][0]["status"] == "not-better"
    assert read_roles(settings, "transactions").leader == LOGREG

    shown = _cli(settings, "models", "decisions")
    assert shown.count("promote") == 1 and shown.count("keep") == 1
    assert "fraud-logreg v1: supported" in shown


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize("case", ["better", "equal"])
def test_seeded_streams_promote_a_better_challenger_and_never_an_equal_one(
        settings, history, case, seed):
    """On the real stack, several seeds (McNemar: exact, so each seed's outcome is fixed by
    its data): a challenger better by the generator's edge is promoted on 1,500 labelled
    events; an equally good one is kept (its false-promotion rate over 200 seeds is in
    docs/lifecycle.md, 3.0%)."""
    _cli(settings, "train", "--history", str(history), "--seed", "3")
    roles = read_roles(settings, "transactions")
    policy = PromotionSpec(policy="best-recent", metric="f1", window="2d", interval="1h",
                           min_labels=500, margin=0.0, test="mcnemar", cooldown="0s")
    spec = load_spec(settings.spec).model_copy(update={"promotion": policy})
    now = int(time.time() * 1000)
    produce_labels(settings, 1500, better=LOGREG if case == "better" else None, now=now,
                   seed=seed)
    out = evaluate(settings, spec, now_ms=now)
    (cand,) = out.decision["candidates"]
    assert cand["n"] == 1500, cand
    if case == "better":
        assert out.decision["action"] == "promote" and cand["status"] == "supported", cand
        assert read_roles(settings, "transactions").leader == LOGREG
    else:
        assert out.decision["action"] == "keep" and cand["status"] == "not-better", cand
        assert read_roles(settings, "transactions").revision == roles.revision


def test_manual_policy_and_missing_roles_are_one_line_errors(settings):
    result = CliRunner().invoke(app, ["models", "evaluate"], env=_env(settings))
    assert result.exit_code != 0
    assert "promotion policy manual" in str(result.exception or result.output)


# -- health: a challenger that fails its checks is never promoted --------------------------
HEALTH_POLICY = PromotionSpec(policy="best-recent", metric="f1", window="2d", interval="1h",
                              min_labels=500, margin=0.01, bootstrap_samples=300,
                              cooldown="0s", min_coverage=0.95)


def _leader_only_labels(settings: Settings, n: int, *, now: int, seed: int) -> None:
    """labeled.v1 records of ``n`` more events in the last day that only the leader scored."""
    codec = Codec.for_schema("labeled")
    producer = Producer(settings.kafka.producer_config(acks="all"))
    rng = np.random.default_rng(seed)
    for i in range(n):
        t = now - 20 * HOUR + int(i * 18 * HOUR / n) + 7
        y = int(rng.random() < 0.2)
        s = float(rng.random())
        rec = {"model_id": LGBM.model_id, "version": LGBM.version, "role": "leader",
               "prediction_id": f"q{seed}-{i}", "event_id": f"q{seed}-{i}",
               "entity_id": "card-1", "source": "", "event_time": t, "scored_time": t,
               "outcome_time": t + 1000, "score": s, "label": int(s >= 0.5), "outcome": y,
               "label_latency_ms": 1000, "features": None}
        producer.produce(settings.topic("labeled"), key=LGBM.model_id.encode(),
                         value=codec.encode(rec))
    assert producer.flush(30) == 0


def _unhealthy_challenger_is_kept(settings: Settings, now: int) -> dict:
    """Evaluate the policy: the (better) challenger is kept out; its candidate record."""
    spec = load_spec(settings.spec).model_copy(update={"promotion": HEALTH_POLICY})
    before = read_roles(settings, "transactions")
    out = evaluate(settings, spec, now_ms=now)
    assert out.made_now and not out.applied and out.decision["action"] == "keep"
    after = read_roles(settings, "transactions")
    assert (after.revision, after.leader) == (before.revision, LGBM)
    (doc,) = recent_decisions(settings, "transactions")
    assert doc["decision_id"] == out.decision["decision_id"] and doc["chosen"] is None
    (cand,) = doc["candidates"]
    assert (cand["model_id"], cand["status"]) == ("fraud-logreg", "unhealthy")
    assert doc["reason"] == "no challenger beats the leader: fraud-logreg v1: unhealthy"
    return cand


def test_a_challenger_whose_artifact_was_tampered_with_is_not_promoted(settings, history):
    _cli(settings, "train", "--history", str(history), "--seed", "3")
    registry = ModelRegistry(settings.registry_dir)
    artifact = registry.artifact_file(registry.get(LOGREG.model_id, LOGREG.version))
    now = int(time.time() * 1000)
    produce_labels(settings, 1500, better=LOGREG, now=now, seed=1)  # clearly better
    data = bytearray(artifact.read_bytes())
    data[-2] ^= 0x01  # one bit: the sha256 no longer matches the registry's
    artifact.write_bytes(bytes(data))

    cand = _unhealthy_challenger_is_kept(settings, now)
    assert cand["reason"].startswith("registry check failed: sha256 mismatch for"
                                     " fraud-logreg v1")


def test_a_challenger_that_scored_too_few_of_the_leaders_events_is_not_promoted(
        settings, history):
    _cli(settings, "train", "--history", str(history), "--seed", "3")
    now = int(time.time() * 1000)
    produce_labels(settings, 1000, better=LOGREG, now=now, seed=1)  # clearly better, paired
    _leader_only_labels(settings, 500, now=now, seed=2)  # 1000 of 1500: coverage 0.67

    cand = _unhealthy_challenger_is_kept(settings, now)
    assert cand["reason"] == ("scored 1000 of the leader's 1500 labelled events"
                              " (< min_coverage 0.95)")
