"""Delayed outcomes end to end: predictions + outcomes -> worker (index, join, monitor) ->
labeled topic, metrics equal to scikit-learn's, outcome fields on the documents, and no
pending prediction lost across a worker restart."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from sklearn import metrics as skm

from precog.avro import Codec
from precog.io.elasticsearch import elasticsearch_client
from precog.settings import Settings
from precog.spec import parse_duration
from tests.e2e.helpers import WorkerProcess, decode_all, read_topic, wait_for

pytestmark = pytest.mark.e2e

DAY = 86_400_000
WINDOW = parse_duration("7d")


def wait_ready(w: WorkerProcess, timeout: float = 90.0) -> None:
    """Until Faust says ``Worker ready`` (/health is 503 without the score agent's models)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            raise AssertionError(f"worker exited {w.proc.returncode}:\n{w.log_tail()}")
        if "Worker ready" in w.log_path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"worker not ready after {timeout}s:\n{w.log_tail()}")


@contextmanager
def worker(settings: Settings, tmp: Path, agents: str) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp, agents)
    try:
        wait_ready(w)
        yield w
    finally:
        w.stop()


def make_stream(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``n`` predictions (leader + challenger) and their outcomes; event i is labelled
    unless i % 10 == 9; every 7th outcome is sent twice; every 13th is late."""
    rng = np.random.default_rng(seed)
    base = int(time.time() * 1000) - 3 * DAY
    preds, outs = [], []
    for i in range(n):
        y = int(rng.random() < 0.3)
        s = float(np.round(np.clip(rng.beta(2 + 3 * y, 4 - 2 * y), 0.001, 0.999), 3))
        c = float(np.round(rng.random(), 3))
        t = base + i * 1000
        preds.append({
            "prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": f"card-{i % 17}",
            "source": "transactions", "event_time": t, "scored_time": t + 5,
            "leader": {"model_id": "fraud-lgbm", "version": 1, "role": "leader", "score": s,
                       "label": int(s >= 0.5), "threshold": 0.5, "artifact_sha256": "a" * 64},
            "challengers": [{"model_id": "fraud-logreg", "version": 1, "role": "challenger",
                             "score": c, "label": int(c >= 0.45), "threshold": 0.45,
                             "artifact_sha256": "b" * 64}],
            "features": [{"name": "amount", "value": float(rng.lognormal(3, 1)), "age_ms": 0}],
            "provenance": {"namespace": "x", "spec": "transactions",
                           "event_schema": "precog.events.Transaction/v1",
                           "prediction_schema": "precog.predictions.Prediction/v1",
                           "code_version": "test", "source_topic": "x", "partition": 0,
                           "offset": i, "worker": "test"},
        })
        if i % 10 == 9:
            continue
        late = i % 13 == 0
        delay = WINDOW + DAY if late else int(rng.integers(60_000, DAY))
        out = {"event_id": f"e{i}", "label": y, "event_time": t, "outcome_time": t + delay,
               "source": "chargebacks"}
        outs.append(out)
        if i % 7 == 0:
            outs.append({**out, "label": 1 - y, "outcome_time": out["outcome_time"] + 5})
    return preds, outs


def produce(settings: Settings, topic: str, schema: str, records: list[dict]) -> None:
    codec = Codec.for_schema(schema)
    p = Producer(settings.kafka.producer_config())
    for r in records:
        p.produce(settings.topic(topic), key=r["event_id"].encode(), value=codec.encode(r))
    assert p.flush(30) == 0


def joined_expected(preds: list[dict], outs: list[dict]) -> dict[str, dict]:
    """Event id -> the first in-window outcome: what the join must produce."""
    by_event = {p["event_id"]: p for p in preds}
    first: dict[str, dict] = {}
    for o in outs:
        if o["event_id"] in first:
            continue
        if o["outcome_time"] > by_event[o["event_id"]]["event_time"] + WINDOW:
            continue
        first[o["event_id"]] = o
    return first


def sklearn_metrics(pairs: list[dict]) -> dict[str, float]:
    y = [p["outcome"] for p in pairs]
    d = [p["label"] for p in pairs]
    s = [p["score"] for p in pairs]
    return {"accuracy": skm.accuracy_score(y, d), "precision": skm.precision_score(y, d),
            "recall": skm.recall_score(y, d), "f1": skm.f1_score(y, d),
            "roc_auc": skm.roc_auc_score(y, s), "log_loss": skm.log_loss(y, s, labels=[0, 1])}


def test_metrics_equal_sklearn_and_documents_get_outcomes(settings: Settings, tmp_path: Path):
    preds, outs = make_stream(600, seed=5)
    expected = joined_expected(preds, outs)
    # some outcomes arrive before their predictions
    early = [o for o in outs if int(o["event_id"][1:]) >= 550]
    produce(settings, "outcomes", "outcome", early)
    with worker(settings, tmp_path, agents="index,join,monitor") as w:
        produce(settings, "predictions", "prediction", preds)
        produce(settings, "outcomes", "outcome", [o for o in outs if o not in early])
        labeled = decode_all(read_topic(settings, settings.topic("labeled"),
                                        2 * len(expected), timeout=120), "labeled")
        assert len(labeled) == 2 * len(expected), w.log_tail()
        assert {r["event_id"] for r in labeled} == set(expected)
        assert all(r["outcome"] == expected[r["event_id"]]["label"] for r in labeled)

        es = elasticsearch_client(settings)
        index = settings.index("metrics")

        def latest_cumulative() -> dict[str, dict] | None:
            es.indices.refresh(index=index, ignore_unavailable=True)
            res = es.search(index=index, size=1000, ignore_unavailable=True,
                            query={"term": {"window": "cumulative"}},
                            sort=[{"computed_time": "desc"}])
            got: dict[str, dict] = {}
            for h in res["hits"]["hits"]:
                got.setdefault(h["_source"]["model_id"], h["_source"])
            if all(got.get(m, {}).get("n_labels") == len(expected)
                   for m in ("fraud-lgbm", "fraud-logreg")):
                return got
            return None

        got = wait_for(latest_cumulative, timeout=60)
        assert got, w.log_tail()
        for model in ("fraud-lgbm", "fraud-logreg"):
            pairs = [r for r in labeled if r["model_id"] == model]
            want, rec = sklearn_metrics(pairs), got[model]
            for k in ("accuracy", "precision", "recall", "f1"):
                assert rec[k] == want[k], (model, k)
            for k in ("roc_auc", "log_loss"):
                assert abs(rec[k] - want[k]) < 1e-9, (model, k)
            assert rec["label_coverage"] == pytest.approx(len(expected) / len(preds))

        # the metrics topic carries the same records
        on_topic = decode_all(read_topic(settings, settings.topic("metrics"), 6, timeout=30),
                              "metrics")
        assert {r["model_id"] for r in on_topic} == {"fraud-lgbm", "fraud-logreg"}

        # prediction documents carry the outcome
        pidx = settings.index("predictions")

        def labelled_docs() -> int:
            es.indices.refresh(index=pidx)
            n = es.count(index=pidx, query={"exists": {"field": "outcome_label"}})["count"]
            return n if n == 2 * len(expected) else 0

        assert wait_for(labelled_docs, timeout=60) == 2 * len(expected), w.log_tail()
        some = next(iter(expected))
        doc = es.get(index=pidx, id=f"p{some[1:]}:fraud-lgbm:1")["_source"]
        assert (doc["outcome_label"], doc["outcome_time"]) == (
            expected[some]["label"], expected[some]["outcome_time"])
        health = es.search(index=settings.index("pipeline-health"), size=100,
                           ignore_unavailable=True)["hits"]["hits"]
        assert all(h["_source"]["kind"] in ("volume", "quality", "dead_letter", "outlier", "lag")
                   for h in health)
        es.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_worker_restart_in_the_label_window_loses_no_pending_prediction(
        settings: Settings, tmp_path: Path, sig: int):
    preds, outs = make_stream(300, seed=8)
    expected = joined_expected(preds, outs)
    first = [o for o in outs if int(o["event_id"][1:]) < 100]
    rest = [o for o in outs if int(o["event_id"][1:]) >= 100]
    w = WorkerProcess(settings, tmp_path, "join")
    try:
        wait_ready(w)
        produce(settings, "predictions", "prediction", preds)
        produce(settings, "outcomes", "outcome", first)
        n_first = len(joined_expected(preds, first))
        got = read_topic(settings, settings.topic("labeled"), 2 * n_first, timeout=90)
        assert len(got) == 2 * n_first, w.log_tail()
        time.sleep(3)  # let the changelog writes and the offset commit happen
    finally:
        w.stop(sig)
    # the remaining 200 predictions are pending in the changelog only now
    with worker(settings, tmp_path, agents="join") as w2:
        produce(settings, "outcomes", "outcome", rest)
        labeled = decode_all(read_topic(settings, settings.topic("labeled"),
                                        2 * len(expected), timeout=120), "labeled")
        assert {r["event_id"] for r in labeled} == set(expected), w2.log_tail()
        assert len(labeled) == 2 * len(expected)
