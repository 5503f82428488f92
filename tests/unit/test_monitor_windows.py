"""Metrics windows are exact under any arrival order (docs/monitoring.md, "Online metrics").

Labels arrive shuffled, the oldest ones last; at every tick each window equals
scikit-learn on exactly the labels its definition selects:

* ``cumulative``: every label received;
* ``last_<N>``: the N received labels with the largest (outcome_time, event_id,
  prediction_id);
* ``last_<T>``: the received labels with outcome_time in (C - T, C], C = the largest
  outcome_time received and clock given so far.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from precog.avro import Codec
from precog.monitor.metrics import MetricsBook
from precog.monitor.monitor import Monitor, MonitorConfig

pytestmark = pytest.mark.unit

H = 3_600_000
LAST_N = 500
LAST_MS = H
EVENTS = 5000
SPAN_S = 6 * 3600  # outcome times over 6 hours, whole seconds: many ties
MODELS = (("lead", 1, "leader", 0.5), ("chal", 3, "challenger", 0.4))
FIELDS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss",
          "label_latency_p50_ms", "label_latency_p95_ms")


def _labels(seed: int = 7) -> list[dict]:
    """One labeled record per model and event; scores rounded to 2 digits (AUC ties)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(EVENTS):
        y = int(rng.random() < 0.3)
        t = int(rng.integers(0, SPAN_S)) * 1000
        latency = int(rng.integers(1, 86_400)) * 1000
        for model_id, version, role, threshold in MODELS:
            shift = 3 if model_id == "lead" else 1
            s = float(np.clip(np.round(rng.beta(2 + shift * y, 4 - y), 2), 0.001, 0.999))
            out.append({"model_id": model_id, "version": version, "role": role,
                        "prediction_id": f"p{i}", "event_id": f"e{i}", "score": s,
                        "label": int(s >= threshold), "outcome": y, "event_time": t - latency,
                        "outcome_time": t, "label_latency_ms": latency})
    return out


def _arrival(labels: list[dict], seed: int) -> list[dict]:
    """Shuffled, and the 400 oldest records last (very late outcomes)."""
    order = list(np.random.default_rng(seed).permutation(len(labels)))
    oldest = set(sorted(range(len(labels)), key=lambda i: labels[i]["outcome_time"])[:400])
    return [labels[i] for i in order if i not in oldest] + [labels[i] for i in order
                                                            if i in oldest]


def _sklearn(pairs: list[dict]) -> dict:
    """The metrics.v1 values of ``pairs``, from scikit-learn and numpy (None: undefined)."""
    if not pairs:
        return {"n_labels": 0, **dict.fromkeys(FIELDS)}
    y = np.array([p["outcome"] for p in pairs])
    d = np.array([p["label"] for p in pairs])
    s = np.array([p["score"] for p in pairs])
    lat = np.array([p["label_latency_ms"] for p in pairs])
    return {
        "n_labels": len(pairs),
        "accuracy": skm.accuracy_score(y, d),
        "precision": skm.precision_score(y, d) if d.any() else None,
        "recall": skm.recall_score(y, d) if y.any() else None,
        "f1": skm.f1_score(y, d) if (y.any() or d.any()) else None,
        "roc_auc": skm.roc_auc_score(y, s) if 0 < y.sum() < len(y) else None,
        "log_loss": skm.log_loss(y, s, labels=[0, 1]),
        "label_latency_p50_ms": float(np.percentile(lat, 50)),
        "label_latency_p95_ms": float(np.percentile(lat, 95)),
    }


def _assert_window(rec: dict, exp: dict, latency: bool = True) -> None:
    where = (rec["model_id"], rec["window"])
    assert rec["n_labels"] == exp["n_labels"], where
    for k in ("accuracy", "precision", "recall", "f1"):  # counts: exact to the last bit
        assert rec[k] == exp[k], (where, k)
    for k in ("roc_auc", "log_loss", *(FIELDS[-2:] if latency else ())):
        if exp[k] is None:
            assert rec[k] is None, (where, k)
        else:
            assert rec[k] == pytest.approx(exp[k], rel=1e-12, abs=1e-12), (where, k)


def _selected(arrived: list[dict], model_id: str, clock: int) -> dict[str, list[dict]]:
    """What each window's definition selects from the labels received so far."""
    mine = [r for r in arrived if r["model_id"] == model_id]
    newest = sorted(mine, key=lambda r: (r["outcome_time"], r["event_id"],
                                         r["prediction_id"]))[-LAST_N:]
    recent = [r for r in mine if clock - LAST_MS < r["outcome_time"] <= clock]
    return {"cumulative": mine, f"last_{LAST_N}": newest, "last_1h": recent}


@pytest.mark.parametrize("arrival_seed", [0, 1, 2])
def test_every_window_equals_sklearn_on_the_labels_its_definition_selects(arrival_seed):
    labels = _labels()
    arrival = _arrival(labels, arrival_seed)
    newest_t = max(r["outcome_time"] for r in labels)
    # (labels received before the tick, clock the tick gives): clocks ahead of the labels,
    # then the very late ones, then the clock alone empties the window
    ticks = [(1, None), (150, None), (2_000, None), (5_000, 4 * H), (9_000, None),
             (9_600, None), (10_000, None), (10_000, newest_t + 20 * 60_000),
             (10_000, newest_t + 59 * 60_000), (10_000, newest_t + H - 1),
             (10_000, newest_t + H)]
    book = MetricsBook(LAST_N, LAST_MS)
    received, clock, sizes = 0, None, []
    for k, tick_clock in ticks:
        for rec in arrival[received:k]:
            book.observe_labeled(rec)
        received = k
        arrived = arrival[:k]
        clock = max([r["outcome_time"] for r in arrived] + [c for c in (clock, tick_clock)
                                                               if c is not None])
        snap = {(r["model_id"], r["window"]): r for r in book.snapshot("t", 1, clock=tick_clock)}
        models = sorted({r["model_id"] for r in arrived})
        assert sorted(snap) == sorted((m, w) for m in models
                                      for w in ("cumulative", f"last_{LAST_N}", "last_1h"))
        for model_id in models:
            for window, pairs in _selected(arrived, model_id, clock).items():
                _assert_window(snap[(model_id, window)], _sklearn(pairs),
                               latency=window != "cumulative")
        sizes.append(sum(r["n_labels"] for (_, w), r in snap.items() if w == "last_1h"))
    # the ticks covered windows that grow, hold labels that arrived too old, and drain
    assert sizes[-1] == 0 and sizes[-2] > 0 and max(sizes) > 700


def test_arrival_order_changes_no_window():
    labels = _labels(seed=11)
    snaps = []
    for seed in (3, 4):
        book = MetricsBook(LAST_N, LAST_MS)
        for rec in _arrival(labels, seed):
            book.observe_labeled(rec)
        snaps.append([{k: v for k, v in r.items()
                       if r["window"] != "cumulative" or not k.startswith("label_latency")}
                      for r in book.snapshot("t", 1, clock=5 * H)])
    for a, b in zip(*snaps, strict=True):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, float):
                assert v == pytest.approx(b[k], rel=1e-12, abs=1e-12), (a["window"], k)
            else:
                assert v == b[k], (a["window"], k)


def _label(t: int, outcome: int = 1, i: int = 0) -> dict:
    return {"model_id": "m", "version": 1, "role": "leader", "prediction_id": f"p{t}:{i}",
            "event_id": f"e{t}:{i}", "score": 0.9, "label": 1, "outcome": outcome,
            "event_time": t - 1000, "outcome_time": t, "label_latency_ms": 1000}


def test_the_monitor_watermark_moves_the_time_window_without_new_labels():
    mon = Monitor(MonitorConfig("t", metrics_last_n=10, metrics_last_ms=H))
    for i, t in enumerate(range(0, H, 60_000)):  # one label a minute for an hour
        mon.on_labeled(_label(t, outcome=i % 2))

    def windows(out) -> dict:
        return {r["window"]: r for r in out.metrics}

    assert windows(mon.tick(now=1))["last_1h"]["n_labels"] == 60  # clock = 59 min
    mon.on_event("transactions", H + 30 * 60_000)  # the events' watermark: 1h30
    snap = windows(mon.tick(now=2))
    assert snap["last_1h"]["n_labels"] == 29  # outcome times in (30 min, 1h30]
    mon.on_labeled(_label(10 * 60_000, i=1))  # arrives 80 min old: never in last_1h
    snap = windows(mon.tick(now=3))
    assert [snap[w]["n_labels"] for w in ("cumulative", "last_10", "last_1h")] == [61, 10, 29]
    snap = windows(mon.tick(now=4, watermark=3 * H))
    assert snap["last_1h"]["n_labels"] == 0
    assert all(snap["last_1h"][k] is None for k in FIELDS)
    codec = Codec.for_schema("metrics")
    assert codec.decode(codec.encode(snap["last_1h"])) == snap["last_1h"]
    # the clock never moves back: a smaller watermark later changes nothing
    assert windows(mon.tick(now=5, watermark=0))["last_1h"]["n_labels"] == 0
