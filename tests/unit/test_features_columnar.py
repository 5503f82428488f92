"""The columnar featurizer (precog/features_columnar.py) gives the per-event chain's bits.

Every test runs the same items through :meth:`Featurizer.featurize_columns` (the streaming
path, itself checked against the plain definitions in tests/unit/test_features.py) and
through :class:`ColumnarChain` / :func:`featurize_chunk`, and compares the feature bits, the
gaps and the entity states, chunk after chunk.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from precog.features import (
    DIRECT_PARTITION,
    EntityState,
    Featurizer,
    build_training_frame,
    sort_key,
)
from precog.features_columnar import TAIL, ColumnarChain, featurize_chunk
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from tests.unit.test_features import SPECS, bits, random_stream, spec_stream, tx

pytestmark = pytest.mark.unit

H = 3_600_000
Item = tuple[dict, int, int]


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


def run_both(fz: Featurizer, chunks: list[list[Item]],
             starts: dict[str, EntityState | None] | None = None) -> ColumnarChain:
    """Chain ``chunks`` both ways and assert equal bits, gaps and states after each."""
    starts = dict(starts or {})
    stream: dict[str, EntityState | None] = dict(starts)
    chain = ColumnarChain(fz, dict(starts))
    for items in chunks:
        expected = fz.featurize_columns(stream, items)
        got = chain.featurize(items)
        assert np.array_equal(bits(got.X), bits(expected.X))
        assert got.gaps_ms.tolist() == expected.gaps_ms.tolist()
        assert np.array_equal(got.ages_ms(), expected.ages_ms())
        assert got.X.dtype == np.float64 and got.X.shape == expected.X.shape
        stream.update(expected.changed)
        for entity in {str(e[fz.entity_field]) for e, _, _ in items}:
            assert chain.state(entity) == stream.get(entity), entity
    assert {e: s for e, s in chain.states().items() if s is not None} == {
        e: s for e, s in stream.items() if s is not None and e in chain.states()}
    return chain


def chunked(items: list[Item], rng: random.Random, low: int, high: int) -> list[list[Item]]:
    out, i = [], 0
    while i < len(items):
        n = rng.randint(low, high)
        out.append(items[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("n_entities", [3, 30, 400])
def test_odd_streams_of_every_spec_chunk_after_chunk(name: str, n_entities: int) -> None:
    # NaN, infinities, -0.0, None, equal times, out-of-order events, long gaps (spec_stream)
    spec = SPECS[name]()
    fz = Featurizer(spec)
    events = spec_stream(spec, seed=11, n=3000, n_entities=n_entities)
    items = [(e, 0, i) for i, e in enumerate(events)]
    chain = run_both(fz, chunked(items, random.Random(5), 1, 900))
    if n_entities == 400:
        assert chain.row  # the chains did run as arrays (not all handed to the per-event path)


def test_many_entities_go_as_arrays_and_long_chains_are_finished_per_event(
        spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(21, 6000, n_cards=300)
    hot = [tx(f"h{i}", 1_700_000_000_000 + i * 90_000, 10.0 + i % 7, merchant=f"m{i % 60}",
              card="card-hot") for i in range(400)]  # one chain far longer than the others
    mixed = sorted(events + hot, key=sort_key(spec))
    items = [(e, 0, i) for i, e in enumerate(mixed)]
    chain = run_both(fz, chunked(items, random.Random(2), 2000, 3000))
    assert "card-hot" in chain.objects  # its tail went through the per-event chain
    assert len(chain.row) > 100


def test_first_events_expiry_ties_and_out_of_order(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    t0 = 1_700_000_000_000
    events = []
    for c in range(TAIL * 2):  # enough chains for the array steps
        card = f"card-{c}"
        events += [tx(f"{c}-a", t0, 10.0, card=card),
                   tx(f"{c}-b", t0, 20.0, card=card),  # same time: no decay
                   tx(f"{c}-c", t0 + 400 * 86_400_000, 30.0, card=card),  # decays to ~0
                   tx(f"{c}-d", t0 + 5, 40.0, merchant="m2", card=card),  # out of order
                   tx(f"{c}-e", t0 + 400 * 86_400_000 + 1, 1e300, card=card)]
    missing = dict(tx("x-1", t0, 5.0, card="card-0"))
    missing["merchant_id"] = None
    missing["amount"] = None
    events.append(missing)
    items = [(e, 0, i) for i, e in enumerate(events)]
    run_both(fz, [items[:40], items[40:]])
    run_both(fz, [items])


def test_training_frame_equals_one_chain_over_the_sorted_history(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(8, 5000, n_cards=250)
    frame = build_training_frame(spec, events)
    ordered = sorted(events, key=sort_key(spec))
    got = featurize_chunk(fz, {}, [(e, 0, i) for i, e in enumerate(ordered)])
    assert np.array_equal(bits(got.X), bits(frame.X))


def test_start_states_watermarks_and_redeliveries_of_a_topic(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(3, 4000, n_cards=200)
    per_part: dict[int, int] = {}
    items = []
    for e in events:
        p = int(e["card_id"].split("-")[1]) % 3  # an entity stays in one partition
        items.append((e, p, per_part.setdefault(p, 0)))
        per_part[p] += 1
    first = fz.featurize_columns({}, items[:1500]).changed  # the online state (watermarks)
    # the range again from before the watermarks, as a run from Redis over a topic reads it
    chunks = chunked(items[1000:], random.Random(4), 300, 800)
    run_both(fz, chunks, starts=dict(first))
    # and a chunk redelivered whole, and items from several partitions for one entity
    run_both(fz, [items[:700], items[300:900],
                  [(e, k % 2, 10_000 + k) for k, (e, _, _) in enumerate(items[900:1600])]])


def test_events_resent_at_other_offsets_in_a_chunk_and_across_chunks(
        spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(6, 3000, n_cards=TAIL * 8)
    rng = random.Random(8)
    items: list[Item] = [(e, 0, i) for i, e in enumerate(events)]
    # re-sends of earlier events at new offsets: soon after (the same chunk), much later
    # (the next chunks, while the state still keeps the id) and long after (applied again)
    for n, k in enumerate(sorted(rng.sample(range(100, 2900), 60))):
        back = rng.choice([1, 3, 40, 400, 2000])
        items.insert(k + n, (events[max(0, k - back)], 1, 10_000 + n))
    chain = run_both(fz, chunked(items, random.Random(3), 150, 700))
    assert chain.row  # the other chains still ran as arrays
    starts = {"card-1": EntityState(last_time=1_700_000_000_000, streamed=["s-1", "s-2"])}
    resent = [(tx("s-1", 1_700_000_050_000, 5.0), 0, 1),
              (tx("s-3", 1_700_000_060_000, 6.0), 0, 2)]
    run_both(fz, [items[:400] + resent], starts=starts)


def test_states_the_arrays_do_not_hold(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(17, 2000, n_cards=60)
    starts = {
        "card-1": EntityState(last_time=1_700_000_000_000, counts={"3600000": 2.5},
                              recent={"merchant_id": ["m1", "m2", "m1"]}),  # a repeat
        "card-2": EntityState(last_time=1_700_000_000_000,
                              recent={"country": [f"C{i}" for i in range(12)]}),  # too long
        "card-3": EntityState(last_time=1_700_000_000_000, direct=["e-x"]),
        "card-4": EntityState(last_time=1_600_000_000_000, counts={"3600000": 1.0},
                              sums={"amount@86400000": 12.5}, recent={"category": ["fuel"]},
                              applied={"0": 5}),
        "card-5": EntityState(last_time=None, counts={"3600000": 3.0}),
    }
    items: list[Item] = [(e, 0, 100 + i) for i, e in enumerate(events)]
    direct = tx("e-direct", 1_700_000_100_000, 12.0, card="card-7")
    items.insert(500, (direct, DIRECT_PARTITION, -1))
    run_both(fz, chunked(items, random.Random(9), 200, 700), starts=starts)


def test_a_chunk_that_raises_leaves_the_states_as_they_were(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    events = random_stream(5, 1500, n_cards=80)
    chain = ColumnarChain(fz, {})
    chain.featurize([(e, 0, i) for i, e in enumerate(events[:1000])])
    before = chain.states()
    bad = dict(events[1200])
    bad["amount"] = "a lot"
    items = [(e, 0, 1000 + i) for i, e in enumerate(events[1000:])]
    with pytest.raises(ValueError):
        chain.featurize([*items[:100], (bad, 0, 5000), *items[100:]])
    assert chain.states() == before
    stream = fz.featurize_columns({}, [(e, 0, i) for i, e in enumerate(events[:1000])]).changed
    expected = fz.featurize_columns(stream, items)
    assert np.array_equal(bits(chain.featurize(items).X), bits(expected.X))


def test_empty_chunk(spec: PipelineSpec) -> None:
    fz = Featurizer(spec)
    cols = ColumnarChain(fz, {}).featurize([])
    assert cols.X.shape == (0, len(fz.names)) and cols.gaps_ms.shape == (0,)
