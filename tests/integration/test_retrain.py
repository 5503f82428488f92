"""`precog retrain` on the real stack: the training set from topics equals the offline one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from precog.pipelines.fitting import holdout_metrics, time_split
from precog.pipelines.retrain import read_topic_data
from precog.pipelines.train import labeled_frame
from precog.services.lifecycle import recent_decisions
from precog.services.model_control import read_roles
from typer.testing import CliRunner

from precog.avro import Codec
from precog.cli import app
from precog.history import read_history
from precog.models import decide, served_scores
from precog.registry import ModelRegistry
from precog.roles import ModelRef
from precog.settings import Settings
from precog.spec import load_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from precog.simulate import write_history

    out = tmp_path_factory.mktemp("history")
    write_history(out, 3000, seed=8, end_ms=1_760_000_000_000, progress=False)
    return out


def _cli(settings: Settings, *args: str) -> str:
    env = {"PRECOG_NAMESPACE": settings.namespace,
           "PRECOG_REGISTRY_DIR": str(settings.registry_dir), "PRECOG_SPEC": str(settings.spec)}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _produce(settings: Settings, topic: str, schema: str, records: list[dict], key: str) -> None:
    codec = Codec.for_schema(schema)
    producer = Producer(settings.kafka.producer_config(acks="all"))
    for r in records:
        producer.produce(settings.topic(topic), key=str(r[key]).encode(), value=codec.encode(r))
    assert producer.flush(30) == 0


def _scores(settings: Settings, ref: ModelRef, frame, rows: np.ndarray) -> np.ndarray:
    loaded = ModelRegistry(settings.registry_dir).load(ref.model_id, ref.version)
    cols = [frame.names.index(f) for f in loaded.features]
    return served_scores(loaded.runtime, np.ascontiguousarray(frame.X[rows][:, cols]))


def test_retrain_from_topics_registers_challengers_with_their_data_window(settings, history):
    _cli(settings, "train", "--history", str(history), "--seed", "1")
    spec = load_spec(settings.spec)
    events, outcomes = read_history(history, spec)
    rng = np.random.default_rng(2)
    shuffled = [events[i] for i in rng.permutation(len(events))]  # arrival order is not time
    started = int(time.time() * 1000)
    _produce(settings, spec.event.topic, spec.event.schema_name, shuffled, "card_id")
    _produce(settings, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")
    until = int(time.time() * 1000) + 1

    # the frame from the topics is the offline one, bit for bit
    data = read_topic_data(settings, spec, started - 1, until)
    offline = labeled_frame(spec, history)
    assert data.frame.event_ids == offline.event_ids
    assert np.array_equal(data.frame.X, offline.X)
    assert np.array_equal(data.frame.y, offline.y)
    assert data.events_read == len(events) and data.invalid == 0
    assert sum(b - a for a, b in data.offsets.values()) == len(events)

    # the leader's joined labels of the last window: 300 holdout events and 50 it was
    # trained on (left out), with the scores it served
    holdout = time_split(data.frame.event_times, 0.2)
    rows = np.concatenate([np.flatnonzero(holdout)[:300], np.flatnonzero(~holdout)[:50]])
    lead_scores = _scores(settings, ModelRef("fraud-lgbm", 1), data.frame, rows)
    _produce(settings, "labeled", "labeled", [
        {"model_id": "fraud-lgbm", "version": 1, "role": "leader", "prediction_id": f"p{i}",
         "event_id": data.frame.event_ids[i], "entity_id": "c", "source": "",
         "event_time": int(data.frame.event_times[i]), "scored_time": 0, "outcome_time": 0,
         "score": float(sc), "label": 0, "outcome": int(data.frame.y[i]),
         "label_latency_ms": 0, "features": None} for i, sc in zip(rows, lead_scores, strict=True)],
        "model_id")
    until = int(time.time() * 1000) + 1

    out = _cli(settings, "retrain", "run", "--since", str(started - 1), "--until", str(until),
               "--max-challengers", "3", "--seed", "1")
    assert ": registered:" in out
    roles = read_roles(settings, spec.name)
    assert roles.leader == ModelRef("fraud-lgbm", 1)  # never directly the leader
    assert roles.challengers == (ModelRef("fraud-logreg", 1), ModelRef("fraud-lgbm", 2),
                                 ModelRef("fraud-logreg", 2))
    meta = ModelRegistry(settings.registry_dir).get("fraud-lgbm", 2)
    assert settings.topic(spec.event.topic) in meta.training_source
    assert f"received {started - 1}..{until}" in meta.training_source
    assert meta.training_window_start == int(offline.event_times.min())
    v1 = ModelRegistry(settings.registry_dir).get("fraud-lgbm", 1)
    assert meta.training_data_sha256 == v1.training_data_sha256  # the same rows

    (audit,) = [d for d in recent_decisions(settings, spec.name) if d["kind"] == "retrain"]
    assert audit["action"] == "registered" and audit["policy"] == "manual"
    assert {(c["model_id"], c["version"]) for c in audit["candidates"]} == {
        ("fraud-lgbm", 2), ("fraud-logreg", 2)}
    lgbm = next(c for c in audit["candidates"] if c["model_id"] == "fraud-lgbm")
    assert lgbm["value"] == meta.holdout.f1 and lgbm["leader_value"] == v1.holdout.f1
    # ...and on the last window's joined labels, against what the leader served there
    recent = next(c for c in audit["candidates"]
                  if c["model_id"] == "fraud-lgbm" and c["status"] == "recent-labels")
    kept = rows[:300]
    y = data.frame.y[kept]
    new_scores = _scores(settings, ModelRef("fraud-lgbm", 2), data.frame, kept)
    assert recent["n"] == 300 and recent["positives"] == int(y.sum())
    assert recent["value"] == holdout_metrics(y, new_scores, meta.threshold).f1
    assert recent["leader_value"] == holdout_metrics(y, lead_scores[:300], v1.threshold).f1
    new_right = decide(new_scores, meta.threshold) == y
    lead_right = decide(lead_scores[:300], v1.threshold) == y
    assert recent["challenger_only_right"] == int((new_right & ~lead_right).sum())
    assert recent["leader_only_right"] == int((lead_right & ~new_right).sum())
    assert "the leader's 350 labels joined in" in recent["reason"]
    assert "(50 of events it was trained on, left out)" in recent["reason"]

    # the cap: three challengers already, a run would add two more
    again = _cli(settings, "retrain", "run", "--since", str(started - 1), "--until", str(until),
                 "--max-challengers", "3")
    assert ": skipped: 3 challengers already" in again
    assert read_roles(settings, spec.name).revision == roles.revision


def test_a_drift_alert_triggers_exactly_one_run_within_the_cooldown(settings, history, es_client):
    from precog.pipelines.retrain_triggers import check

    from precog.monitor.alerts import make_alert
    from precog.spec import RetrainingSpec

    _cli(settings, "train", "--history", str(history), "--seed", "1")
    spec = load_spec(settings.spec).model_copy(update={"retraining": RetrainingSpec(
        triggers=["concept_drift"], window="3650d", cooldown="1d", max_challengers=5)})
    events, outcomes = read_history(history, spec)
    _produce(settings, spec.event.topic, spec.event.schema_name, events, "card_id")
    _produce(settings, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")
    now = int(time.time() * 1000)
    assert check(settings, spec, now_ms=now) is None  # no alert yet: nothing runs
    alert = make_alert(settings.namespace, "concept_drift", "ADWIN", model_id="fraud-lgbm",
                       version=1, window="labels#10", statistic=0.3, threshold=0.002,
                       message="error rate up", event_time=now, detected_time=now)
    es_client.index(index=settings.index("alerts"), id=alert["alert_id"], document=alert,
                    refresh="wait_for")

    first = check(settings, spec, now_ms=now + 1000)
    assert first is not None and first["action"] == "registered"
    assert first["policy"].startswith(f"concept_drift: alert {alert['alert_id']}")
    es_client.indices.refresh(index=settings.index("decisions"))
    # the same alert, and a new one, within the cool-down: no second run
    later = {**alert, "alert_id": "a2", "detected_time": now + 5000}
    es_client.index(index=settings.index("alerts"), id="a2", document=later, refresh="wait_for")
    assert check(settings, spec, now_ms=now + 10_000) is None
    runs = [d for d in recent_decisions(settings, spec.name) if d["kind"] == "retrain"]
    assert len(runs) == 1
    assert len(read_roles(settings, spec.name).challengers) == 3


def _metrics_doc(settings: Settings, window: str, f1: float, n: int, computed: int) -> dict:
    return {"namespace": settings.namespace, "model_id": "fraud-lgbm", "version": 1,
            "role": "leader", "window": window, "f1": f1, "n_labels": n,
            "event_time": computed - computed % 3_600_000, "computed_time": computed}


def test_a_low_estimated_f1_triggers_a_run_once_per_estimate(settings, history, es_client):
    """The estimated_performance trigger reads the leader's estimated_<T> windows (scores
    only, before labels) computed after the last run; a realised window does not count."""
    from precog.pipelines.retrain_triggers import check

    from precog.spec import RetrainingSpec

    _cli(settings, "train", "--history", str(history), "--seed", "1")
    spec = load_spec(settings.spec).model_copy(update={"retraining": RetrainingSpec(
        triggers=["estimated_performance"], min_estimated_f1=0.5, min_labels=100,
        window="3650d", cooldown="0s", max_challengers=5)})
    events, outcomes = read_history(history, spec)
    _produce(settings, spec.event.topic, spec.event.schema_name, events, "card_id")
    _produce(settings, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")
    index = settings.index("metrics")
    now = int(time.time() * 1000)
    es_client.index(index=index, id="realised", refresh="wait_for",
                    document=_metrics_doc(settings, "realised_1h", 0.1, 900, now - 2000))
    es_client.index(index=index, id="few", refresh="wait_for",
                    document=_metrics_doc(settings, "estimated_1h", 0.1, 99, now - 2000))
    assert check(settings, spec) is None  # a realised window, and too few predictions

    es_client.index(index=index, id="low", refresh="wait_for",
                    document=_metrics_doc(settings, "estimated_1h", 0.2, 800, now - 1000))
    first = check(settings, spec)
    assert first is not None and first["action"] == "registered"
    assert first["policy"].startswith("estimated_performance: leader fraud-lgbm v1 estimated"
                                      " F1 0.2000 < 0.5 on 800 predictions (estimated_1h")
    es_client.indices.refresh(index=settings.index("decisions"))
    # no cool-down, but the estimate was the last run's evidence: no second run on it
    assert check(settings, spec) is None
    later = int(time.time() * 1000) + 1
    es_client.index(index=index, id="later", refresh="wait_for",
                    document=_metrics_doc(settings, "estimated_1h", 0.3, 800, later))
    second = check(settings, spec)
    assert second is not None and "estimated F1 0.3000" in second["policy"]
    runs = [d for d in recent_decisions(settings, spec.name) if d["kind"] == "retrain"]
    assert len(runs) == 2


def test_the_worker_runs_the_retrain_controller_as_a_supervised_child(settings, history,
                                                                     tmp_path):
    """`--agents ...,retrain`: the worker starts `precog retrain watch` as its child, which
    retrains on the schedule's first run; the worker's stop stops it, and so does a kill -9
    of the worker (the kernel's parent-death signal)."""
    import os
    import re
    import signal

    import psutil
    import yaml

    from precog.workers import WorkerProcess
    from tests.e2e.helpers import wait_for

    _cli(settings, "train", "--history", str(history), "--seed", "1")
    raw = yaml.safe_load(Path(settings.spec).read_text())
    raw["retraining"] = {"triggers": ["schedule"], "schedule": "1d", "window": "3650d",
                         "cooldown": "1d", "max_challengers": 5}
    spec_path = tmp_path / "spec-retrain.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    s = settings.model_copy(update={"spec": spec_path})
    spec = load_spec(spec_path)
    events, outcomes = read_history(history, spec)
    _produce(s, spec.event.topic, spec.event.schema_name, events, "card_id")
    _produce(s, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")

    def child_pid(worker: WorkerProcess, nth: int = 1) -> int:
        def found() -> list[str]:
            assert worker.proc.poll() is None, worker.log_tail()
            return re.findall(r"retrain controller started \(pid (\d+)\)",
                              worker.log_path.read_text(errors="replace"))
        wait_for(lambda: len(found()) >= nth, timeout=60, every=0.2)
        return int(found()[nth - 1])

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    env = {"PRECOG_LIFECYCLE_RETRAIN_CHECK_SECONDS": "2"}
    worker = WorkerProcess(s, tmp_path, agents="control,retrain", extra_env=env)
    try:
        worker.wait_healthy()
        pid = child_pid(worker)
        assert psutil.Process(pid).ppid() == worker.proc.pid
        wait_for(lambda: any(d["kind"] == "retrain" for d in recent_decisions(s, spec.name)),
                 timeout=180, every=1.0)
        time.sleep(5)  # two more checks: within the cool-down, no second run
        os.kill(worker.proc.pid, signal.SIGTERM)  # the worker only: it stops its child
        worker.proc.wait(60)
        wait_for(lambda: gone(pid), timeout=15, every=0.2)
    finally:
        worker.stop()
    (run,) = [d for d in recent_decisions(s, spec.name) if d["kind"] == "retrain"]
    assert run["action"] == "registered" and run["policy"] == "schedule: first run"
    log = worker.log_path.read_text(errors="replace")
    assert "retrain: trigger schedule: first run" in log
    assert f"retrain controller (pid {pid}) stopped with the worker" in log
    assert len(read_roles(s, spec.name).challengers) == 3

    again = WorkerProcess(s, tmp_path, agents="control,retrain", extra_env=env)
    try:
        again.wait_healthy()
        pid = child_pid(again)
        wait_for(lambda: "no retraining trigger fired" in again.log_path.read_text(
            errors="replace"), timeout=60, every=0.2)
        os.kill(again.proc.pid, signal.SIGKILL)  # no stop at all: the child still goes
        again.proc.wait(10)
        wait_for(lambda: gone(pid), timeout=15, every=0.2)
    finally:
        again.stop()
    assert len(read_roles(s, spec.name).challengers) == 3
