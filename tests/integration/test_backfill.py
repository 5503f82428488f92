"""Feature backfill: live scoring continues exactly where the history left the features."""

from __future__ import annotations

import pytest
from precog.pipelines.backfill import backfill, fold_states
from precog.services.feature_store import RedisOnlineStore

from precog.features import Featurizer, build_training_frame, sort_key
from precog.simulate import SimConfig, TransactionSimulator, read_history, write_history
from precog.spec import load_spec

pytestmark = pytest.mark.integration


def test_backfilled_state_continues_exactly_like_the_offline_features(settings, tmp_path):
    spec = load_spec(settings.spec)
    write_history(tmp_path / "h", 3000, seed=21, progress=False)
    events, _ = read_history(tmp_path / "h")
    assert backfill(settings, spec, tmp_path / "h") == len({e["card_id"] for e in events})

    store = RedisOnlineStore(settings, spec)
    expected = fold_states(spec, events)
    stored = store.read_sync(list(expected))
    assert {k: v.to_bytes() for k, v in stored.items()} == {
        k: v.to_bytes() for k, v in expected.items()
    }

    # the next 400 events, scored online from Redis, equal the offline frame of everything
    last = max(e["event_time"] for e in events)
    nxt = [ev.record for ev in TransactionSimulator(
        SimConfig(seed=22, start_ms=last + 1000)).events(400)]
    cards = sorted({e["card_id"] for e in nxt})
    states = store.read_sync(cards)
    featurizer = Featurizer(spec)
    online, _ = featurizer.featurize_batch(
        states, [(e, 0, i) for i, e in enumerate(sorted(nxt, key=sort_key(spec)))])
    frame = build_training_frame(spec, [*events, *nxt])
    rows = {eid: i for i, eid in enumerate(frame.event_ids)}
    offline = [frame.X[rows[e["event_id"]]].tolist()
               for e in sorted(nxt, key=sort_key(spec))]
    assert [v.values for v in online] == offline
