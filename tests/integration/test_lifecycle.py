"""The promotion policy on the real stack: decide from {ns}.labeled, record, apply once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from precog.services import lifecycle
from precog.services.lifecycle import evaluate, recent_decisions
from precog.services.model_control import read_roles
from typer.testing import CliRunner

from precog.avro import Codec
from precog.cli import app
from precog.io.kafka import read_to_end
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


def test_manual_policy_and_missing_roles_are_one_line_errors(settings):
    result = CliRunner().invoke(app, ["models", "evaluate"], env=_env(settings))
    assert result.exit_code != 0
    assert "promotion policy manual" in str(result.exception or result.output)
