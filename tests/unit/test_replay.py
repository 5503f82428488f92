"""The pure replay core: plans, pacing, the time merge, acknowledgements and checkpoints,
warm-up state, the comparison math, and its documents against the strict template."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from precog import resources
from precog.avro import Codec
from precog.dashboards import template_fields
from precog.errors import ConfigError
from precog.features import Featurizer
from precog.replay.checkpoint import AckTracker, Checkpoint, already_delivered
from precog.replay.compare import LEADER, compare, documents
from precog.replay.merge import TimeMerge
from precog.replay.pacing import Pacer, record_time_left_s
from precog.replay.plan import PartitionRange, parse_offsets, parse_pace, parse_time, plan_ranges
from precog.replay.request import ReplayRequest
from precog.replay.warmup import rebuild_states
from precog.settings import Settings
from precog.simulate import SimConfig, simulator_for
from precog.spec import SPEC_DIR, load_spec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- request

PROD = Settings(namespace="prod")
PARALLEL = PROD.model_copy(update={"namespace": "parallel"})


def test_a_request_names_its_topic_and_checkpoint_from_the_spec_and_the_target(tmp_path):
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    r = ReplayRequest(PROD, PARALLEL, spec, checkpoint_dir=tmp_path)
    assert (r.replayed_topic, r.checkpoint_path) == (
        "events.transactions", tmp_path / "parallel" / "events.transactions.json")
    other = ReplayRequest(PROD, PARALLEL, spec, topic="events.other", checkpoint_dir=tmp_path)
    assert other.checkpoint_path == tmp_path / "parallel" / "events.other.json"
    assert (r.pace, r.resume, r.progress, r.stop_after) == (None, True, True, None)


@pytest.mark.parametrize(("kw", "message"), [
    ({"target": PROD}, "--from-namespace and --to-namespace are both 'prod'"),
    ({"start_ms": 1, "start_offsets": "0"}, "give --start or --start-offset, not both"),
    ({"end_ms": 1, "end_offsets": "0"}, "give --end or --end-offset, not both"),
    ({"warmup_start_ms": 1, "topic": "outcomes"},
     "--warmup-start needs the spec's event topic events.transactions"),
    ({"warmup_start_ms": 2, "start_ms": 1}, "--warmup-start must not be after --start"),
])
def test_a_request_that_cannot_run_is_refused_before_anything_connects(kw, message):
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    with pytest.raises(ConfigError) as err:
        ReplayRequest(**{"source": PROD, "target": PARALLEL, "spec": spec, **kw})
    assert str(err.value) == message


# --------------------------------------------------------------------------- plan


def test_parse_time_accepts_iso_with_zone_and_epoch_ms():
    assert parse_time("2024-05-01T02:00:00+02:00") == 1_714_521_600_000
    assert parse_time("1714521600000") == 1_714_521_600_000
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday")


def test_parse_pace_and_offsets_refuse_nonsense():
    assert parse_pace("MAX") is None and parse_pace("0.5x") == 0.5
    for bad in ("0x", "fast-ish", "-2x", "10"):
        with pytest.raises(ConfigError, match="bad pace"):
            parse_pace(bad)
    with pytest.raises(ConfigError, match="no partition 9"):
        parse_offsets("9:1", [0, 1])
    with pytest.raises(ConfigError, match="bad offsets"):
        parse_offsets("0-1", [0, 1])


def test_plan_clamps_to_watermarks_and_reads_minus_one_as_the_end():
    marks = {0: (0, 100), 1: (10, 20), 2: (0, 0)}
    got = plan_ranges(marks, starts={0: 40, 1: 3, 2: None}, ends={0: -1, 1: 15, 2: 5})
    assert got == [PartitionRange(0, 40, 100), PartitionRange(1, 10, 15),
                   PartitionRange(2, 0, 0)]
    assert [r.size for r in got] == [60, 5, 0]


# --------------------------------------------------------------------------- pacing


def test_pacer_spaces_records_by_record_time_over_speed():
    pacer, wall, sent = Pacer(4.0), 1000.0, []
    for ts in (0, 400, 400, 2000, 1000, 6000):  # one out of order (1000 after 2000)
        wall += pacer.delay_ms(ts, wall)
        sent.append(wall)
    assert sent == [1000.0, 1100.0, 1100.0, 1500.0, 1500.0, 2500.0]
    assert Pacer(None).delay_ms(10**12, 0.0) == 0.0


def test_a_paced_replay_needs_at_least_the_record_time_left_over_the_speed():
    """The progress line's ETA is the larger of this and its rate-based one (test_progress)."""
    assert record_time_left_s(0, 60_000, 1.0) == 60.0
    assert record_time_left_s(0, 60_000, 10.0) == 6.0
    assert record_time_left_s(70_000, 60_000, 1.0) == 0.0  # an older record came last
    assert record_time_left_s(0, None, 1.0) is None and record_time_left_s(0, 1, None) is None


# --------------------------------------------------------------------------- merge


def test_time_merge_is_globally_ordered_and_keeps_each_streams_order():
    rng = random.Random(3)
    streams = {s: sorted(rng.sample(range(1000), 60)) for s in range(4)}
    streams[2][10], streams[2][11] = streams[2][11], streams[2][10]  # one stream out of order
    merge, out = TimeMerge(list(streams)), []
    pos = dict.fromkeys(streams, 0)
    while not merge.done:
        for s in merge.waiting_for() or list(streams):
            chunk = streams[s][pos[s]:pos[s] + rng.randrange(1, 8)]
            for i, ts in enumerate(chunk):
                merge.push(s, ts, (s, pos[s] + i, ts))
            pos[s] += len(chunk)
            if pos[s] >= len(streams[s]):
                merge.finish(s)
        out += list(merge.ready())
    assert len(out) == 240
    for s in streams:
        assert [i for st, i, _ in out if st == s] == list(range(60))
    inversions = sum(1 for a, b in zip(out, out[1:], strict=False) if a[2] > b[2])
    assert inversions <= 1  # only the swapped pair may come out of time order


def test_time_merge_holds_back_until_every_open_stream_has_data():
    m = TimeMerge(["ev", "out"])
    m.push("ev", 10, "e10")
    assert list(m.ready()) == [] and m.waiting_for() == ["out"]
    m.push("out", 5, "o5")
    assert list(m.ready()) == ["o5"]
    m.finish("out")
    assert list(m.ready()) == ["e10"] and not m.done
    m.finish("ev")
    assert m.done


# --------------------------------------------------------------------------- acks


def test_ack_tracker_advances_only_over_a_contiguous_prefix():
    t, s = AckTracker(), ("prod.e", 2)
    for off in (5, 6, 9, 10):  # gaps in source offsets (compaction) are fine
        t.sent(s, off)
    t.acked(s, 9, 102)
    t.acked(s, 6, 101)
    assert t.position(s) is None and t.pending == 4
    t.acked(s, 5, 100)
    assert t.position(s) == (9, 102) and t.pending == 1
    t.failed(s, 10, "boom")
    assert t.position(s) == (9, 102) and t.errors == ["prod.e[2]@10: boom"]


def test_checkpoint_round_trip_and_resume_positions(tmp_path):
    c = Checkpoint("prod", "par", "events.transactions",
                   {"prod.e": {"0": [10, 50], "1": [0, 5]}}, {"prod.e": {"0": 7, "1": 0}})
    assert c.resume_offset("prod.e", 0) is None and c.next_target_offset("prod.e", 0) == 7
    c.record_ack("prod.e", 0, 19, 16)
    back = Checkpoint.from_json(c.to_json())
    assert back == c and back.same_job(c)
    assert back.resume_offset("prod.e", 0) == 20 and back.next_target_offset("prod.e", 0) == 17
    assert already_delivered(17, 21) == 4
    with pytest.raises(ConfigError, match="truncated or recreated"):
        already_delivered(17, 10)
    with pytest.raises(ConfigError, match="--restart"):
        Checkpoint.from_json(json.dumps({**json.loads(c.to_json()), "version": 99}))
    with pytest.raises(ConfigError, match="unreadable"):
        Checkpoint.from_json("{not json")


# --------------------------------------------------------------------------- warm-up


def test_warm_up_states_equal_the_online_states_without_watermarks():
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    sim = simulator_for(SimConfig(seed=4, entities=25, diurnal=False, garbage_fraction=0.1,
                                  mean_interarrival_ms=60_000.0))
    codec = Codec.for_schema("transaction")
    evs = list(sim.events(500))
    records = [(e.garbage if e.garbage is not None else codec.encode(e.record),
                int(e.record["event_time"])) for e in evs]
    result = rebuild_states(spec, records[:200])
    result = rebuild_states(spec, records[200:], into=result)  # chunks chain
    valid = [e.record for e in evs if e.valid]
    _, online = Featurizer(spec).featurize_batch({}, [(r, 3, i) for i, r in enumerate(valid)])
    assert result.events == len(valid) and result.skipped == 500 - len(valid) > 0
    assert set(result.states) == set(online)
    for entity, state in online.items():
        # the online path carries the production offsets and event ids ...
        assert state.applied and state.streamed
        state.applied, state.streamed = {}, []
        assert result.states[entity] == state  # ... the warm-up has neither, else equal


# --------------------------------------------------------------------------- compare


def _prediction(eid: str, leader: tuple[str, int, float, float], challengers=(),
                features: dict[str, float] | None = None, code: str = "c1") -> dict[str, Any]:
    def ms(m: tuple[str, int, float, float], role: str) -> dict[str, Any]:
        return {"model_id": m[0], "version": m[1], "role": role, "score": m[2],
                "label": int(m[2] >= m[3]), "threshold": m[3], "artifact_sha256": "s"}
    return {"event_id": eid, "entity_id": f"card-{eid}", "event_time": 1000 + len(eid),
            "leader": ms(leader, "leader"),
            "challengers": [ms(c, "challenger") for c in challengers],
            "features": [{"name": k, "value": v, "age_ms": 0}
                         for k, v in (features or {"amount": 1.0}).items()],
            "provenance": {"code_version": code}}


def test_compare_reports_determinism_agreement_one_sided_events_and_duplicates():
    rng = np.random.default_rng(0)
    left, right = [], []
    for i in range(50):
        a, b = float(rng.random()), float(rng.random())
        left.append(_prediction(f"e{i}", ("lgbm", 1, a, 0.5), [("lr", 1, b, 0.3)]))
        # right: logreg leads, lgbm challenges; lgbm scores identical, lr differs on e0..e9
        b2 = b + (0.25 if i < 10 else 0.0)
        right.append(_prediction(f"e{i}", ("lr", 1, b2, 0.3), [("lgbm", 1, a, 0.5)],
                                 code="c2"))
    left.append(_prediction("only-left", ("lgbm", 1, 0.1, 0.5)))
    right.append(right[3])  # a duplicate delivery
    r = compare(left, right, {}, {}, left="prod", right="par", top=5, dead_letters=(3, 3))
    assert (r.events_left, r.events_right, r.events_both) == (51, 50, 50)
    assert (r.only_left, r.only_right, r.only_left_sample) == (1, 0, ["only-left"])
    assert (r.duplicates_left, r.duplicates_right) == (0, 1)
    diffs = {(m.model_id, m.version): m for m in r.models}
    assert diffs[("lgbm", 1)].equal == 50 and diffs[("lgbm", 1)].max_abs_diff == 0.0
    assert diffs[("lr", 1)].equal == 40
    assert diffs[("lr", 1)].max_abs_diff == pytest.approx(0.25)
    expected = sum(int(lp["leader"]["label"]) == int(rp["leader"]["label"])
                   for lp, rp in zip(left[:50], right[:50], strict=True))
    assert r.leader_agreements == expected and r.leader_agreement == expected / 50
    assert (r.code_versions_left, r.code_versions_right) == (["c1"], ["c2"])
    assert len(r.disagreements) == 5
    first_agreeing = next((i for i, d in enumerate(r.disagreements)
                           if d.left_label == d.right_label), len(r.disagreements))
    assert all(d.left_label != d.right_label for d in r.disagreements[:first_agreeing])


def test_compare_metrics_equal_sklearn_on_joined_pairs():
    rng = np.random.default_rng(1)
    preds, outcomes = [], {}
    for i in range(200):
        y = int(rng.random() < 0.2)
        s = float(np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1))
        c = float(rng.random())
        preds.append(_prediction(f"e{i}", ("m", 2, s, 0.5), [("c", 1, c, 0.5)]))
        if i % 3:  # only two thirds have an outcome yet
            outcomes[f"e{i}"] = y
    r = compare(preds, preds, outcomes, {}, left="a", right="b")
    left = {(m.model_id, m.version): m for m in r.metrics if m.side == "left"}
    assert not [m for m in r.metrics if m.side == "right"]  # no outcomes on the right
    joined = [(outcomes[p["event_id"]], p) for p in preds if p["event_id"] in outcomes]
    y = [o for o, _ in joined]
    for key, pick in (((LEADER, 0), lambda p: p["leader"]), (("m", 2), lambda p: p["leader"]),
                      (("c", 1), lambda p: p["challengers"][0])):
        labels = [pick(p)["label"] for _, p in joined]
        scores = [pick(p)["score"] for _, p in joined]
        m = left[key]
        assert m.n_labels == len(y) == 133
        assert m.precision == precision_score(y, labels, zero_division=0)
        assert m.recall == recall_score(y, labels, zero_division=0)
        assert m.f1 == f1_score(y, labels, zero_division=0)
        assert m.roc_auc == roc_auc_score(y, scores)
    assert left[(LEADER, 0)].role == "decision" and left[("c", 1)].role == "challenger"
    # identical sides: a determinism check passes, nothing disagrees
    assert all(m.equal == m.count == 200 for m in r.models) and r.disagreements == []


def test_disagreements_name_the_features_that_differ():
    left = [_prediction("e1", ("m", 1, 0.9, 0.5), features={"amount": 5.0, "count": 1.0})]
    right = [_prediction("e1", ("m", 1, 0.2, 0.5), features={"amount": 5.0, "count": 3.0})]
    d = compare(left, right, {"e1": 1}, {}, left="a", right="b").disagreements[0]
    assert (d.left_label, d.right_label, d.outcome_label) == (1, 0, 1)
    assert d.feature_diffs == {"count": 2.0} and d.features == {"amount": 5.0, "count": 1.0}
    assert d.abs_diff == pytest.approx(0.7)


# --------------------------------------------------------------------------- documents


def _template() -> dict[str, Any]:
    return json.loads((resources.template_dir() / "replay-compare.json").read_text())


def _documented() -> dict[str, str]:
    text = (ROOT / "docs/documents.md").read_text()
    body = text.split("## `{ns}-replay-compare`", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("field", "") or set(cells[0]) <= {"-"}:
            continue
        for name in cells[0].split(","):
            out[name.strip()] = cells[1].split()[0].strip(",:")
    return out


def test_template_maps_exactly_the_documented_fields():
    mapped = {k: v for k, v in template_fields(_template()).items() if "." not in k}
    assert mapped == _documented()
    assert _template()["template"]["mappings"]["dynamic"] == "strict"


def test_every_document_field_is_mapped_with_a_fitting_type():
    left = [_prediction(f"e{i}", ("m", 1, i / 10, 0.5), [("c", 1, 0.5, 0.5)]) for i in range(6)]
    right = [_prediction(f"e{i}", ("c", 1, 1 - i / 10, 0.5), features={"amount": 2.0})
             for i in range(1, 7)]
    r = compare(left, right, {"e1": 1, "e2": 0}, {"e3": 0, "e4": 1}, left="p", right="q",
                dead_letters=(1, 1))
    docs = documents(r, 1_700_000_000_000)
    kinds = [d["kind"] for _, d in docs]
    assert kinds.count("summary") == 1 and "model" in kinds and "metrics" in kinds
    assert "disagreement" in kinds
    assert len({i for i, _ in docs}) == len(docs)
    mapped = template_fields(_template())
    py_types = {"keyword": (str, list), "long": (int,), "integer": (int,),
                "double": (float, int), "date": (int,), "object": (dict,)}
    for _, doc in docs:
        for name, value in doc.items():
            assert name in mapped, name
            assert isinstance(value, py_types[mapped[name]]), (name, value)
            if mapped[name] == "object":
                assert all(isinstance(v, float) for v in value.values())


def test_a_linear_challenger_scores_a_row_the_same_in_any_batch():
    """The determinism check needs it: BLAS rounds a row by the batch it is in."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from precog.models import SkopsRuntime

    rng = np.random.default_rng(7)
    X = rng.lognormal(2.0, 1.5, size=(3000, 9))
    y = (X[:, 0] + rng.normal(0, 5, 3000) > 12).astype(int)
    runtime = SkopsRuntime(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y))
    full = runtime.predict_proba(X)
    for n in (1, 2, 3, 17, 499):
        parts = np.concatenate([runtime.predict_proba(np.array(X[i:i + n]))
                                for i in range(0, len(X), n)])
        assert (parts == full).all(), n
