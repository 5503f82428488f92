"""Unit tests of the feature engine: exact values, purity, idempotency, offline == online."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from precog.features import (
    DIRECT_IDS_KEPT,
    DIRECT_PARTITION,
    FIRST_EVENT_SECONDS,
    STREAMED_IDS_KEPT,
    EntityState,
    Featurizer,
    build_training_frame,
)
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from tests.unit.reference_features import reference_batch, reference_featurize

pytestmark = pytest.mark.unit

H = 3_600_000


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


def tx(eid: str, t: int, amount: float, merchant: str = "m1", country: str = "DE",
       channel: str = "pos", card: str = "card-1", category: str = "grocery") -> dict:
    return {"event_id": eid, "card_id": card, "customer_id": "c1", "merchant_id": merchant,
            "category": category, "amount": amount, "currency": "EUR", "country": country,
            "channel": channel, "event_time": t}


def as_dict(fz: Featurizer, values: list[float]) -> dict[str, float]:
    return dict(zip(fz.names, values, strict=True))


def random_stream(seed: int, n: int, n_cards: int = 40) -> list[dict]:
    """A seeded stream with bursts, repeats, equal timestamps and out-of-order ids."""
    rng = random.Random(seed)
    t = 1_700_000_000_000
    out = []
    for i in range(n):
        t += rng.choice([0, 1, 500, 60_000, 3_600_000, int(rng.expovariate(1 / 600_000))])
        out.append(tx(f"e{rng.randrange(10**9):09d}-{i}", t, round(rng.lognormvariate(3, 1), 2),
                      merchant=f"m{rng.randrange(80)}", country=rng.choice(["DE", "FR", "US"]),
                      channel=rng.choice(["pos", "online", "atm"]),
                      card=f"card-{rng.randrange(n_cards)}",
                      category=rng.choice(["grocery", "fuel", "travel"])))
    return out


def test_first_event_has_no_history_and_age_zero(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    vec, state = fz.featurize(None, tx("e1", 5 * H + 7, 100.0, channel="online"))
    f = as_dict(fz, vec.values)
    assert f == {
        "amount": 100.0, "log_amount": math.log1p(100.0), "hour_of_day": 5.0,
        "is_online": 1.0, "is_atm": 0.0, "count_1h": 0.0, "count_24h": 0.0, "count_7d": 0.0,
        "sum_24h": 0.0, "seconds_since_last": FIRST_EVENT_SECONDS, "amount_vs_mean": 1.0,
        "new_merchant": 1.0, "new_category": 1.0, "new_country": 1.0,
    }
    assert vec.ages_ms == [0] * len(fz.names)
    assert state.last_time == 5 * H + 7
    assert state.counts == {str(H): 1.0, str(24 * H): 1.0, str(168 * H): 1.0, str(720 * H): 1.0}
    assert state.sums == {f"amount@{24 * H}": 100.0, f"amount@{720 * H}": 100.0}
    assert state.recent == {"merchant_id": ["m1"], "category": ["grocery"], "country": ["DE"]}
    assert state.applied == {}


def test_decay_uses_horizon_as_half_life_and_excludes_own_event(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    _, s1 = fz.featurize(None, tx("e1", 0, 100.0))
    v2, s2 = fz.featurize(s1, tx("e2", H, 50.0, merchant="m2", channel="online"))
    f2 = as_dict(fz, v2.values)
    assert f2["count_1h"] == 0.5
    assert f2["count_24h"] == 0.5 ** (1 / 24)
    assert f2["count_7d"] == 0.5 ** (1 / 168)
    assert f2["sum_24h"] == 100.0 * 0.5 ** (1 / 24)
    assert f2["seconds_since_last"] == 3600.0
    decay30 = 0.5 ** (1 / 720)
    assert f2["amount_vs_mean"] == 50.0 / ((100.0 * decay30) / decay30)
    assert f2["amount_vs_mean"] == pytest.approx(0.5, abs=1e-12)
    assert (f2["new_merchant"], f2["new_category"], f2["new_country"]) == (1.0, 0.0, 0.0)
    stateful = {"count_1h", "count_24h", "count_7d", "sum_24h", "seconds_since_last",
                "amount_vs_mean", "new_merchant", "new_category", "new_country"}
    assert as_dict(fz, v2.ages_ms) == {n: (H if n in stateful else 0) for n in fz.names}

    v3, s3 = fz.featurize(s2, tx("e3", 2 * H, 300.0, country="FR"))
    f3 = as_dict(fz, v3.values)
    assert f3["count_1h"] == 0.75  # (0.5 + 1) * 0.5: e2 counts, e3 itself does not
    assert (f3["new_merchant"], f3["new_country"], f3["hour_of_day"]) == (0.0, 1.0, 2.0)
    assert s3.recent["merchant_id"] == ["m2", "m1"]  # most recent last, no duplicates


def test_featurize_is_pure(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    _, s1 = fz.featurize(None, tx("e1", 0, 10.0))
    before = s1.to_bytes()
    fz.featurize(s1, tx("e2", H, 20.0, merchant="m9"))
    assert s1.to_bytes() == before


def test_novelty_keeps_the_most_recent_values_up_to_capacity(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)  # new_category has capacity 10
    state = None
    cats = [f"c{i}" for i in range(12)]
    for i, c in enumerate(cats):
        _, state = fz.featurize(state, tx(f"e{i}", i * 1000, 5.0, category=c))
    assert state is not None and state.recent["category"] == cats[-10:]
    old, _ = fz.featurize(state, tx("x", 20_000, 5.0, category="c0"))
    recent, _ = fz.featurize(state, tx("y", 20_000, 5.0, category="c11"))
    i = fz.names.index("new_category")
    assert (old.values[i], recent.values[i]) == (1.0, 0.0)


def test_out_of_order_event_does_not_move_time_back(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    _, s1 = fz.featurize(None, tx("e1", 10 * H, 10.0))
    v, s2 = fz.featurize(s1, tx("e0", 9 * H, 10.0))
    f = as_dict(fz, v.values)
    assert (f["count_1h"], f["seconds_since_last"]) == (1.0, 0.0)
    assert s2.last_time == 10 * H and s2.counts[str(H)] == 2.0


def test_state_round_trip_is_exact(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    state = None
    for e in random_stream(3, 200, n_cards=1):
        _, state = fz.featurize(state, e)
    assert state is not None
    again = EntityState.from_bytes(state.to_bytes())
    assert again == state and again.to_bytes() == state.to_bytes()


def test_a_state_whose_numbers_were_written_as_integers_reads_back_typed() -> None:
    """Another writer's JSON (``1`` for ``1.0``, a watermark as ``"7"``) and the stdlib's
    NaN literal both read back as the state to_bytes writes."""
    typed = EntityState(last_time=5, counts={"3600000": 1.0}, sums={"3600000:amount": 2.0},
                        recent={"country": ["DE"]}, applied={"0": 7}, streamed=["e1"])
    other = (b'{"a":{"0":"7"},"c":{"3600000":1},"i":["e1"],"r":{"country":["DE"]},'
             b'"s":{"3600000:amount":2},"t":5,"v":1}')
    again = EntityState.from_bytes(other)
    assert again == typed and again.to_bytes() == typed.to_bytes()
    assert [type(v) for v in (*again.counts.values(), *again.sums.values())] == [float, float]
    assert type(again.applied["0"]) is int
    nan = EntityState.from_bytes(other.replace(b'"c":{"3600000":1}', b'"c":{"3600000":NaN}'))
    assert math.isnan(nan.counts["3600000"]) and nan.sums == typed.sums


def _online(spec: PipelineSpec, ordered: list[dict], seed: int) -> list[list[float]]:
    """featurize_batch in random batch splits with a byte round trip between batches."""
    fz = Featurizer(spec)
    rng = random.Random(seed)
    store: dict[str, bytes] = {}
    rows: list[list[float]] = []
    i = 0
    offsets: dict[int, int] = {}
    while i < len(ordered):
        batch = ordered[i : i + rng.randint(1, 60)]
        i += len(batch)
        items = []
        for e in batch:
            part = int(e["card_id"].split("-")[1]) % 4
            offsets[part] = offsets.get(part, -1) + 1
            items.append((e, part, offsets[part]))
        entities = {e["card_id"] for e in batch}
        states = {k: EntityState.from_bytes(store[k]) if k in store else None for k in entities}
        vectors, changed = fz.featurize_batch(states, items)
        rows.extend(v.values for v in vectors)
        store.update({k: s.to_bytes() for k, s in changed.items()})
    return rows


def test_offline_equals_online_exactly(spec: PipelineSpec) -> None:
    events = random_stream(11, 3000)
    frame = build_training_frame(spec, reversed(events))  # input order does not matter
    ordered = sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
    assert frame.event_ids == [e["event_id"] for e in ordered]
    assert frame.entity_ids == [e["card_id"] for e in ordered]
    assert frame.event_times.dtype == np.int64 and frame.X.dtype == np.float64
    online = np.array(_online(spec, ordered, seed=5), dtype=np.float64)
    assert frame.X.shape == online.shape == (3000, len(spec.features))
    assert np.array_equal(frame.X, online)  # exact, bit for bit
    assert frame.X[:, frame.names.index("count_1h")].max() > 1.0  # the stream has history


def test_replayed_batch_leaves_states_byte_identical(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = sorted(random_stream(21, 300, n_cards=5), key=lambda e: e["event_time"])
    first, second = events[:200], events[200:]
    items1 = [(e, 0, i) for i, e in enumerate(first)]
    _, states = fz.featurize_batch({}, items1)
    items2 = [(e, 0, 200 + i) for i, e in enumerate(second)]
    _, after = fz.featurize_batch(states, items2)
    stored = {k: v.to_bytes() for k, v in {**states, **after}.items()}
    # crash after the Redis write, before the offset commit: the batch comes again
    reloaded = {k: EntityState.from_bytes(b) for k, b in stored.items()}
    vectors, changed = fz.featurize_batch(reloaded, items2)
    assert changed == {}
    assert {k: v.to_bytes() for k, v in reloaded.items()} == stored
    assert len(vectors) == len(items2)
    # a partly new batch applies only the new offsets
    extra = tx("new", second[-1]["event_time"] + 1, 7.0, card=second[-1]["card_id"])
    _, changed = fz.featurize_batch(reloaded, [*items2[-3:], (extra, 0, 300)])
    assert list(changed) == [extra["card_id"]]
    card_state = changed[extra["card_id"]]
    assert card_state.applied == {"0": 300}
    assert card_state.counts[str(H)] == reloaded[extra["card_id"]].counts[str(H)] * 0.5 ** (
        1 / H
    ) + 1.0


def test_batch_chains_several_events_of_one_entity(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    items = [(tx(f"e{i}", i * H, 10.0), 2, 40 + i) for i in range(3)]
    vectors, changed = fz.featurize_batch({"card-1": None}, items)
    i1h = fz.names.index("count_1h")
    assert [v.values[i1h] for v in vectors] == [0.0, 0.5, 0.75]
    assert changed["card-1"].applied == {"2": 42}
    assert changed["card-1"].counts[str(H)] == 1.75  # 0.75 seen by e2 (third event), plus itself


# the columnar batch path against the plain definitions (tests/unit/reference_features.py)

def _spec_with_shared_fields() -> PipelineSpec:
    """Transactions plus features that share a field or horizon with another one."""
    raw = load_spec(SPEC_DIR / "transactions.yaml").model_dump()
    raw["features"] += [
        {"name": "new_merchant_3", "kind": "novelty", "field": "merchant_id", "capacity": 3},
        {"name": "sum_1h", "kind": "decayed_sum", "field": "amount", "horizon": "1h"},
        {"name": "amount_vs_mean_1h", "kind": "ratio_to_mean", "field": "amount",
         "horizon": "1h"},
        {"name": "is_de", "kind": "equals", "field": "country", "value": "DE"},
        {"name": "count_5m", "kind": "decayed_count", "horizon": "5m"},
    ]
    raw["models"] = [{**m, "features": "all"} for m in raw["models"]]
    return PipelineSpec.model_validate(raw)


SPECS = {"transactions": lambda: load_spec(SPEC_DIR / "transactions.yaml"),
         "sensors": lambda: load_spec(SPEC_DIR / "sensors.yaml"),
         "shared": _spec_with_shared_fields}


def spec_stream(spec: PipelineSpec, seed: int, n: int, n_entities: int = 30) -> list[dict]:
    """Seeded events of any spec: every field a feature reads, sometimes odd or missing.

    Numbers include NaN, infinities, -0.0, negatives and None; strings come from a small
    vocabulary (with each equals feature's value) and are sometimes None; times have
    bursts, equal timestamps, long gaps and some events out of order.
    """
    rng = random.Random(seed)
    numeric = {f.field for f in spec.features
               if f.kind in ("value", "log1p", "decayed_sum", "ratio_to_mean")}
    strings = {f.field: [getattr(f, "value", "v0")] for f in spec.features
               if f.kind in ("equals", "novelty")}
    odd = [None, math.nan, math.inf, -math.inf, -0.0, 0.0, -3.5, 1e12]
    t = 1_700_000_000_000
    out = []
    for i in range(n):
        t += rng.choice([0, 0, 1, 500, 60_000, 3_600_000, 40 * 86_400_000,
                         int(rng.expovariate(1 / 600_000))])
        ev: dict = {spec.event.id_field: f"e{i:06d}", spec.event.entity_field:
                    f"ent-{rng.randrange(n_entities)}",
                    spec.event.time_field: t - rng.choice([0] * 9 + [7_200_000])}
        for name in numeric:
            ev[name] = rng.choice(odd) if rng.random() < 0.08 else round(
                rng.lognormvariate(3, 1), 2)
        for name, vocab in strings.items():
            ev[name] = None if rng.random() < 0.05 else rng.choice(
                [*vocab, *(f"v{k}" for k in range(rng.choice([2, 6, 60])))])
        out.append(ev)
    return out


def bits(X: np.ndarray) -> np.ndarray:
    """The float64 values as their bit patterns: equal means bit for bit (NaN, -0.0 too)."""
    return np.ascontiguousarray(X, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize("name", list(SPECS))
def test_featurize_columns_equals_the_definitions_bit_for_bit(name: str) -> None:
    spec = SPECS[name]()
    fz = Featurizer(spec)
    events = spec_stream(spec, seed=3, n=2500)
    rng = random.Random(4)
    store: dict[str, bytes] = {}
    expected_store: dict[str, EntityState] = {}
    offset = 0
    i = 0
    while i < len(events):
        batch = events[i : i + rng.randint(1, 80)]
        i += len(batch)
        items = []
        for e in batch:
            items.append((e, offset % 3, offset))
            offset += 1
        if rng.random() < 0.2:  # a redelivery of the batch's first half, then the rest
            items = items[: len(items) // 2] + items
        entities = {str(e[spec.event.entity_field]) for e, _, _ in items}
        states = {k: EntityState.from_bytes(store[k]) if k in store else None for k in entities}
        rows, ages, expected = reference_batch(
            spec, {k: expected_store.get(k) for k in entities}, items)
        columns = fz.featurize_columns(states, items)
        assert columns.X.shape == (len(items), len(spec.features))
        assert columns.X.dtype == np.float64 and columns.X.flags.c_contiguous
        assert np.array_equal(bits(columns.X), bits(np.array(rows, dtype=np.float64)))
        assert columns.ages_ms().tolist() == ages
        assert columns.gaps_ms.dtype == np.int64
        assert [s.to_bytes() for s in columns.changed.values()] == [
            s.to_bytes() for s in expected.values()]
        assert list(columns.changed) == list(expected)
        vectors, changed = fz.featurize_batch(states, items)
        assert np.array_equal(bits(np.array([v.values for v in vectors])), bits(columns.X))
        assert [v.ages_ms for v in vectors] == ages
        assert changed == columns.changed
        store.update({k: s.to_bytes() for k, s in columns.changed.items()})
        expected_store.update(expected)


@pytest.mark.parametrize("name", list(SPECS))
def test_training_frame_and_featurize_equal_the_definitions(name: str) -> None:
    spec = SPECS[name]()
    fz = Featurizer(spec)
    events = spec_stream(spec, seed=8, n=1500, n_entities=12)
    frame = build_training_frame(spec, events)
    states: dict[str, EntityState] = {}
    ref_states: dict[str, EntityState] = {}
    rows = []
    for event in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        entity = event[spec.event.entity_field]
        values, ages, ref_states[entity] = reference_featurize(spec, ref_states.get(entity),
                                                                event)
        vector, states[entity] = fz.featurize(states.get(entity), event)
        assert np.array_equal(bits(np.array(vector.values)), bits(np.array(values)))
        assert vector.ages_ms == ages
        assert states[entity] == ref_states[entity]
        rows.append(values)
    assert np.array_equal(bits(frame.X), bits(np.array(rows, dtype=np.float64)))
    assert frame.X.flags.c_contiguous


def test_columns_report_gaps_and_which_features_age() -> None:
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    fz = Featurizer(spec)
    items = [(tx("a", 10 * H, 10.0), 0, 0), (tx("b", 11 * H, 10.0), 0, 1),
             (tx("c", 11 * H, 10.0, card="card-2"), 0, 2),
             (tx("d", 10 * H + 5, 10.0), 0, 3)]  # out of order: gap clamped to 0
    columns = fz.featurize_columns({}, items)
    assert columns.gaps_ms.tolist() == [0, H, 0, 0]
    assert columns.stateful == tuple(
        f.kind not in ("value", "log1p", "equals", "hour_of_day") for f in spec.features)
    ages = columns.ages_ms()
    assert ages.dtype == np.int64 and ages.shape == columns.X.shape
    assert ages[1].tolist() == [H if s else 0 for s in columns.stateful]
    assert not ages[[0, 2, 3]].any()
    assert list(columns.changed) == ["card-1", "card-2"]
    assert columns.changed["card-1"].applied == {"0": 3}
    assert columns.changed["card-1"].last_time == 11 * H


def test_empty_batch() -> None:
    fz = Featurizer(load_spec(SPEC_DIR / "transactions.yaml"))
    columns = fz.featurize_columns({"card-1": None}, [])
    assert columns.X.shape == (0, 14) and columns.gaps_ms.shape == (0,)
    assert columns.ages_ms().shape == (0, 14) and columns.changed == {}
    assert fz.featurize_batch({}, []) == ([], {})


def test_featurize_columns_leaves_the_given_states_as_they_were(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(5, 400, n_cards=4)
    _, states = fz.featurize_batch({}, [(e, 0, i) for i, e in enumerate(events[:300])])
    before = {k: s.to_bytes() for k, s in states.items()}
    items = [(e, 1, i) for i, e in enumerate(events[300:])]
    first = fz.featurize_columns(states, items)
    again = fz.featurize_columns(states, items)
    assert {k: s.to_bytes() for k, s in states.items()} == before
    assert np.array_equal(first.X, again.X) and first.changed == again.changed


def test_novelty_state_written_elsewhere_with_repeats_and_overflow(spec: PipelineSpec) -> None:
    """A state holding a value twice, or more values than the capacity, is read as defined."""
    fz = Featurizer(spec)
    odd = EntityState(last_time=0, recent={"category": ["a", "fuel", "b", "fuel"],
                                           "country": [f"C{i}" for i in range(15)],
                                           "merchant_id": [], "other": ["kept"]})
    events = [tx("x", H, 5.0, category="fuel", country="C2"),
              tx("y", 2 * H, 5.0, category="b", country="C14")]
    items = [(e, 0, i) for i, e in enumerate(events)]
    rows, _, expected = reference_batch(spec, {"card-1": odd}, items)
    columns = fz.featurize_columns({"card-1": odd}, items)
    assert columns.X.tolist() == rows
    assert columns.changed == expected
    assert expected["card-1"].recent["category"] == ["a", "fuel", "b"]
    assert expected["card-1"].recent["other"] == ["kept"]


def test_watermark_covers_only_a_stored_state(spec: PipelineSpec) -> None:
    """A new entity takes any offset; a stored one skips what its watermark covers."""
    fz = Featurizer(spec)
    items = [(tx("a", H, 1.0), 0, -1), (tx("b", 2 * H, 1.0), 0, -1)]  # a redelivered -1
    columns = fz.featurize_columns({"card-1": None}, items)
    assert columns.changed["card-1"].applied == {"0": -1}
    assert columns.changed["card-1"].counts[str(H)] == 1.0  # b did not count again
    assert reference_batch(spec, {"card-1": None}, items)[2] == columns.changed


def test_an_event_scored_off_the_topic_moves_the_state_once_from_either_channel(
        spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    e1, e2 = tx("e1", H, 10.0), tx("e2", 2 * H, 20.0)
    direct = fz.featurize_columns({}, [(e1, DIRECT_PARTITION, -1)])
    s1 = direct.changed["card-1"]
    assert s1.direct == ["e1"] and s1.applied == {}
    # the same result as the stream's first delivery of e1, apart from the records kept
    stream = fz.featurize_columns({}, [(e1, 0, 5)]).changed["card-1"]
    assert (s1.last_time, s1.counts, s1.sums, s1.recent) == (
        stream.last_time, stream.counts, stream.sums, stream.recent)
    # scored again off the topic, or arriving on the topic later: the state does not move
    assert fz.featurize_columns({"card-1": s1}, [(e1, DIRECT_PARTITION, -1)]).changed == {}
    assert fz.featurize_columns({"card-1": s1}, [(e1, 2, 40)]).changed == {}
    # other events still move it, from both channels, and the stream's watermark works
    s2 = fz.featurize_columns({"card-1": s1}, [(e2, 2, 41)]).changed["card-1"]
    assert s2.applied == {"2": 41} and s2.direct == ["e1"] and s2.last_time == 2 * H
    assert fz.featurize_columns({"card-1": s2}, [(e2, 2, 41)]).changed == {}
    assert EntityState.from_bytes(s2.to_bytes()) == s2
    # the other order: applied off the topic first, then sent to precog serve: not again
    assert s2.streamed == ["e2"] and s2.holds("e2") and s2.holds("e1")
    assert fz.featurize_columns({"card-1": s2}, [(e2, DIRECT_PARTITION, -1)]).changed == {}
    assert fz.featurize_columns({"card-1": stream}, [(e1, DIRECT_PARTITION, -1)]).changed == {}


def test_the_stream_records_its_event_ids_in_the_batch_and_bounded(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    items = [(tx(f"s{i}", H + i, 1.0), 0, i) for i in range(STREAMED_IDS_KEPT + 3)]
    before = EntityState(last_time=H - 1, streamed=["old"])
    state = fz.featurize_columns({"card-1": before}, items).changed["card-1"]
    assert state.streamed == [f"s{i}" for i in range(3, STREAMED_IDS_KEPT + 3)]
    assert before.streamed == ["old"]  # the given state is not changed
    assert EntityState.from_bytes(state.to_bytes()).streamed == state.streamed
    # within one batch too: the stream's copy, then the same event off the topic
    e = tx("x1", 3 * H, 5.0)
    both = fz.featurize_columns({}, [(e, 0, 1), (e, DIRECT_PARTITION, -1)]).changed["card-1"]
    once = fz.featurize_columns({}, [(e, 0, 1)]).changed["card-1"]
    assert (both.counts, both.sums, both.direct) == (once.counts, once.sums, [])
    # a redelivery records nothing twice
    assert fz.featurize_columns({"card-1": once}, [(e, 0, 1)]).changed == {}


def test_an_event_resent_at_another_offset_moves_its_state_once(spec: PipelineSpec) -> None:
    """A producer's re-send (the same event id at a new offset, in the same or another
    partition) is scored from the state that holds it and does not count twice."""
    fz = Featurizer(spec)
    e1, e2 = tx("e1", H, 10.0), tx("e2", 2 * H, 20.0, merchant="m2")
    once = fz.featurize_columns({}, [(e1, 0, 3), (e2, 0, 4)]).changed["card-1"]
    for again in [(e1, 0, 9), (e1, 1, 0), ({**e2, "amount": 999.0}, 2, 7)]:
        resent = fz.featurize_columns({"card-1": once}, [again])
        assert resent.changed == {}
    # within one batch: the second copy sees the state with the first in it
    both = fz.featurize_columns({}, [(e1, 0, 3), (e2, 0, 4), (e1, 3, 50)])
    assert both.changed["card-1"] == once
    assert reference_batch(spec, {}, [(e1, 0, 3), (e2, 0, 4), (e1, 3, 50)])[2] == both.changed
    row = as_dict(fz, both.X[2].tolist())
    assert row == as_dict(fz, fz.featurize_columns({"card-1": once}, [(e1, 1, 0)]).X[0].tolist())
    # the ids kept are the last STREAMED_IDS_KEPT: a re-send after more events applies again
    later = [(tx(f"x{i}", 3 * H + i, 1.0), 0, 5 + i) for i in range(STREAMED_IDS_KEPT)]
    moved = fz.featurize_columns({"card-1": once}, later).changed["card-1"]
    assert "e1" not in moved.streamed
    assert fz.featurize_columns({"card-1": moved}, [(e1, 0, 99)]).changed != {}


def test_a_state_without_direct_events_keeps_its_bytes_and_the_ids_are_bounded(
        spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    plain = fz.featurize_columns({}, [(tx("e1", H, 1.0), 0, 1)]).changed["card-1"]
    assert b'"e"' not in plain.to_bytes() and b'"i":["e1"]' in plain.to_bytes()
    items = [(tx(f"d{i}", H + i, 1.0), DIRECT_PARTITION, -1) for i in range(DIRECT_IDS_KEPT + 5)]
    state = fz.featurize_columns({"card-1": plain}, items).changed["card-1"]
    assert state.direct == [f"d{i}" for i in range(5, DIRECT_IDS_KEPT + 5)]
    assert EntityState.from_bytes(state.to_bytes()).direct == state.direct
