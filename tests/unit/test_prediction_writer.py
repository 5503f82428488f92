"""The compiled prediction writer writes exactly fastavro's bytes for the same records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from precog.avro import Codec
from precog.errors import SchemaError
from precog.prediction_writer import BatchRows, PredictionWriter, zigzag_varints
from precog.roles import ModelRef, ab, canary
from precog.scoring import EventContext, make_model_set
from precog.traffic import bucket

pytestmark = pytest.mark.unit

CODEC = Codec.for_schema("prediction")


@dataclass
class Model:
    model_id: str
    version: int
    features: list[str]
    threshold: float = 0.5
    artifact_sha256: str = "ab" * 32

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - not called
        raise AssertionError


def _avro_long(n: int) -> bytes:
    """The Avro specification's long encoding, written the slow, obvious way."""
    z = (n << 1) if n >= 0 else ((-n) << 1) - 1
    out = b""
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def test_varints_follow_the_avro_specification_at_every_width():
    values = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)]
    values += [2**k + d for k in range(0, 63, 7) for d in (-1, 0, 1)]
    expected = [_avro_long(v) for v in values]
    assert zigzag_varints(np.array(values, dtype=np.int64)) == expected
    # a few values at a time (a REST request's rows) take the per-value path
    assert [zigzag_varints(np.array([v], dtype=np.int64))[0] for v in values] == expected
    assert zigzag_varints(np.array([], dtype=np.int64)) == []


def _writer(names: list[str], challengers: int, worker: str = "host:1",
            channel: str = "stream") -> PredictionWriter:
    leader = Model("lead-\u00fc", 12, names[:2], threshold=0.3)
    others = [Model(f"ch{i}", 2**20 + i, names[-1:], threshold=0.5 + i / 10)
              for i in range(challengers)]
    models = make_model_set(4, leader, others, names)
    return PredictionWriter(CODEC, models, names, spec_name="tx", namespace="prod",
                            event_schema="precog.events.Transaction/v1", code_version="abc123",
                            worker=worker, channel=channel)


def _rows(rng: np.random.Generator, n: int, names: list[str], models: int) -> BatchRows:
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    X = rng.normal(0, 1e3, size=(n, len(names)))
    if len(names):
        X.flat[rng.choice(X.size, size=min(X.size, 6), replace=False)] = specials[: min(X.size, 6)]
    gaps = rng.choice([0, 1, 63, 64, 1_000, 3_600_000, 86_400_000 * 400, 2**62], size=n)
    ids = ["", "e-\u00e9\u4e2d", "x" * 300] + [f"e{rng.integers(1e12)}" for _ in range(n)]
    return BatchRows(
        event_ids=ids[:n], entity_ids=[f"card-{i % 7}" for i in range(n)],
        event_times=rng.integers(946_684_800_000, 2_000_000_000_000, size=n),
        X=X, gaps_ms=gaps.astype(np.int64),
        scores=[rng.random(n) for _ in range(models)],
        origins=[EventContext(f"prod.events.t{i % 2}", int(p), int(o)) for i, (p, o) in enumerate(
            zip(rng.choice([0, 1, 63, 64, 1023, 1024, 5000], size=n),
                rng.integers(0, 2**50, size=n), strict=True))],
        stateful=[j % 3 != 0 for j in range(len(names))],
    )


@pytest.mark.parametrize("n", [1, 5, 200])  # rows joined one by one (a request), stacked
@pytest.mark.parametrize("challengers", [0, 1, 3])
@pytest.mark.parametrize("n_features", [1, 2, 14])
def test_bytes_equal_fastavro_for_seeded_batches(challengers, n_features, n):
    rng = np.random.default_rng(100 * challengers + n_features + n)
    names = [f"f{j}_\u00e4" if j % 4 == 0 else f"f{j}" for j in range(n_features)]
    writer = _writer(names, challengers)
    rows = _rows(rng, n, names, 1 + challengers)
    got = writer.encode(rows, scored_time=1_800_000_000_123)
    expected = [CODEC.encode(writer.record(rows, i, scored_time=1_800_000_000_123,
                                           feature_names=names)) for i in range(n)]
    assert got == expected
    # and they decode to the record prediction_record builds (labels by each threshold)
    k = min(5, n - 1)
    rec = CODEC.decode(got[k])
    assert rec["leader"]["label"] == int(rows.scores[0][k] >= 0.3)
    assert [f["age_ms"] for f in rec["features"]] == [
        int(rows.gaps_ms[k]) if s else 0 for s in rows.stateful]


def test_a_bad_id_fails_only_its_own_row():
    names = ["a", "b"]
    writer = _writer(names, 1)
    rows = _rows(np.random.default_rng(3), 5, names, 2)
    rows = BatchRows(**{**rows.__dict__, "event_ids": ["ok0", "bad\ud800", "ok2", "ok3", "ok4"]})
    got = writer.encode(rows, scored_time=1)
    assert isinstance(got[1], UnicodeEncodeError)
    assert [CODEC.decode(g)["event_id"] for i, g in enumerate(got) if i != 1] == [
        "ok0", "ok2", "ok3", "ok4"]


def test_refuses_a_codec_of_another_schema():
    models = make_model_set(1, Model("m", 1, ["a"]), [], ["a"])
    with pytest.raises(SchemaError, match="compiled for precog.predictions.Prediction/v3"):
        PredictionWriter(Codec.for_schema("outcome"), models, ["a"], spec_name="s",
                         namespace="n", event_schema="e", code_version="c", worker="w")


def test_the_channel_is_the_last_provenance_field_and_matches_fastavro():
    names = ["a", "b", "c"]
    writer = _writer(names, 1, channel="rest")
    rows = _rows(np.random.default_rng(8), 4, names, 2)
    got = writer.encode(rows, scored_time=9)
    for i, data in enumerate(got):
        rec = writer.record(rows, i, scored_time=9, feature_names=names)
        assert rec["provenance"]["channel"] == "rest"
        assert data == CODEC.encode(rec)
        assert CODEC.decode(data)["provenance"]["channel"] == "rest"


def _traffic_writer(names: list[str], policy: str) -> tuple[PredictionWriter, list[Model]]:
    leader = Model("lead", 3, names[:1], threshold=0.3)
    others = [Model("cand-\u00e9", 7, names[-1:], threshold=0.6), Model("third", 1, names)]
    refs = [ModelRef(m.model_id, m.version) for m in (leader, *others)]
    traffic = (canary(refs[0], refs[1], 2_500, since=0) if policy == "canary" else
               ab([("a", refs[2], 1), ("b", refs[0], 1), ("c", refs[1], 2)], since=0))
    models = make_model_set(9, leader, others, names, traffic=traffic, salt="s")
    assert models.plan.policy == policy
    return PredictionWriter(CODEC, models, names, spec_name="tx", namespace="prod",
                            event_schema="precog.events.Transaction/v1", code_version="abc",
                            worker="w"), [leader, *others]


@pytest.mark.parametrize("policy", ["canary", "ab"])
def test_served_arm_bytes_equal_fastavro_and_follow_the_arm(policy):
    names = ["a", "b", "c"]
    writer, models = _traffic_writer(names, policy)
    rng = np.random.default_rng(41)
    rows = _rows(rng, 300, names, 3)
    rows = BatchRows(**{**rows.__dict__,
                        "entity_ids": [f"card-{i}" for i in rng.integers(0, 10**6, size=300)]})
    rows = BatchRows(**{**rows.__dict__, "buckets": writer.models.plan.buckets(rows.entity_ids)})
    got = writer.encode(rows, scored_time=5)
    assert got == [CODEC.encode(writer.record(rows, i, scored_time=5, feature_names=names))
                   for i in range(300)]
    seen_arms = set()
    for i, data in enumerate(got):
        served = CODEC.decode(data)["served"]
        b = bucket(rows.entity_ids[i], "s")
        arm = writer.models.plan.arms_of(np.array([b]))[0]
        k = writer.models.plan.model_index[arm]
        assert (served["policy"], served["arm"], served["bucket"]) == (
            policy, writer.models.plan.names[arm], b)
        assert served["decided_by"] == {"model_id": models[k].model_id,
                                        "version": models[k].version}
        assert served["score"] == rows.scores[k][i]
        assert served["label"] == int(rows.scores[k][i] >= models[k].threshold)
        seen_arms.add(served["arm"])
    assert seen_arms == set(writer.models.plan.names)


def test_shadow_serves_the_leader_with_bucket_minus_one():
    names = ["a", "b"]
    writer = _writer(names, 2)
    rows = _rows(np.random.default_rng(2), 3, names, 3)
    for i, data in enumerate(writer.encode(rows, scored_time=1)):
        served = CODEC.decode(data)["served"]
        assert (served["policy"], served["arm"], served["bucket"]) == ("shadow", "leader", -1)
        assert served["decided_by"] == {"model_id": "lead-\u00fc", "version": 12}
        assert served["score"] == rows.scores[0][i]


def test_a_split_naming_a_model_not_loaded_serves_shadow():
    leader, cand = Model("lead", 1, ["a"]), Model("cand", 1, ["a"])
    traffic = canary(ModelRef("lead", 1), ModelRef("gone", 1), 500, since=0)
    models = make_model_set(1, leader, [cand], ["a"], traffic=traffic)
    assert models.plan.policy == "shadow"
