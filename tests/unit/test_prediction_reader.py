"""The compiled prediction reader returns what fastavro returns, and the codec's errors."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from precog.avro import Codec
from precog.errors import DecodeError
from precog.prediction_reader import PredictionReader
from precog.prediction_writer import _long, _string
from tests.unit.test_event_reader import corruptions
from tests.unit.test_prediction_writer import _rows, _traffic_writer, _writer

pytestmark = pytest.mark.unit

CODEC = Codec.for_schema("prediction")
READER = PredictionReader(CODEC)


def _records(challengers: int, n_features: int, seed: int) -> list[bytes]:
    names = [f"f{j}_\u00e4" if j % 4 == 0 else f"f{j}" for j in range(n_features)]
    rows = _rows(np.random.default_rng(seed), 120, names, 1 + challengers)
    return [r for r in _writer(names, challengers).encode(rows, scored_time=5)
            if isinstance(r, bytes)]


@pytest.mark.parametrize(("challengers", "n_features"), [(0, 1), (1, 14), (3, 2)])
def test_same_dicts_as_fastavro(challengers, n_features):
    for data in _records(challengers, n_features, seed=challengers + 10 * n_features):
        got, expected = READER.decode(data), CODEC.decode(data)
        # NaN != NaN: compare the encodings of both results, then the values themselves
        assert CODEC.encode(got) == CODEC.encode(expected) == data
        assert repr(got) == repr(expected)


def test_every_bad_record_gets_the_codecs_own_error():
    data = _records(1, 3, seed=1)[0]
    bad = [None, b"", data[:5], data[:40], data + b"\x00", data[:12] + b"\xff" * 30,
           data[:-3], b"\xc3\x01" + bytes(8) + data[10:]]
    for b in bad:
        with pytest.raises(DecodeError) as mine:
            READER.decode(b)
        with pytest.raises(DecodeError) as theirs:
            CODEC.decode(b)
        assert str(mine.value) == str(theirs.value)


def test_negative_block_counts_of_other_writers_are_read():
    # Avro lets a writer prefix an array block with -count and its byte size (Java does)
    data = _records(0, 2, seed=3)[0]
    rec = CODEC.decode(data)
    items = b"".join(_string(f["name"]) + struct.pack("<d", f["value"]) + _long(f["age_ms"])
                     for f in rec["features"])
    plain = _long(2) + items + b"\x00"
    assert data.count(plain) == 1
    rewritten = data.replace(plain, _long(-2) + _long(len(items)) + items + b"\x00")
    assert READER.decode(rewritten) == CODEC.decode(rewritten)
    assert READER.decode(rewritten)["features"] == rec["features"]


def test_a_v1_record_is_read_with_the_stream_channel():
    from precog.avro import schema_versions

    v1 = Codec(schema_versions()["prediction"][:1])
    rec = CODEC.decode(_records(1, 3, seed=4)[0])
    old = {**rec, "provenance": {k: v for k, v in rec["provenance"].items() if k != "channel"}}
    del old["served"]
    data = v1.encode(old)
    assert data[:10] == CODEC.header_of(1) != CODEC.header_of(3)
    # NaN != NaN: compare the reprs
    assert repr(READER.decode(data)) == repr(CODEC.decode(data)) == repr({**rec, "served": None})
    assert READER.decode(data)["provenance"]["channel"] == "stream"


def test_a_v2_record_is_read_with_served_null_and_the_leader_decides():
    from precog.avro import schema_versions
    from precog.scoring import served_of

    v2 = Codec(schema_versions()["prediction"][:2])
    rec = CODEC.decode(_records(1, 3, seed=6)[0])
    old = {k: v for k, v in rec.items() if k != "served"}
    data = v2.encode(old)
    assert data[:10] == CODEC.header_of(2) != CODEC.header_of(3)
    got = READER.decode(data)
    assert repr(got) == repr(CODEC.decode(data)) and got["served"] is None
    assert served_of(got) == rec["served"]  # shadow: the leader's decision, as v3 writes it


def test_a_rest_record_is_read_by_the_compiled_reader():
    names = ["a", "b"]
    rows = _rows(np.random.default_rng(5), 3, names, 1)
    for data in _writer(names, 0, channel="rest").encode(rows, scored_time=1):
        assert data[:10] == CODEC.header_of(3)
        assert repr(READER.decode(data)) == repr(CODEC.decode(data))
        assert READER.decode(data)["provenance"]["channel"] == "rest"


def _answer(decode, data):
    try:
        return "ok " + repr(decode(data))
    except DecodeError as exc:
        return f"error {exc}"


def test_odd_one_byte_lengths_are_negative_like_fastavro():
    # zig-zag: a one-byte length 0x31 is -25, which fastavro refuses (the id is at byte 10)
    data = _records(1, 3, seed=1)[0]
    bad = data[:10] + bytes([data[10] | 1]) + data[11:]
    assert _answer(READER.decode, bad) == _answer(CODEC.decode, bad)
    assert _answer(READER.decode, bad).startswith("error")


def test_corrupted_bodies_get_the_codecs_answer():
    """Seeded byte flips, insertions and deletions after the header: the same record or the
    same error as fastavro, every time."""
    rng = random.Random(5)
    for data in _records(2, 5, seed=4)[:10]:
        for bad in corruptions(data, rng, 200):
            assert _answer(READER.decode, bad) == _answer(CODEC.decode, bad)


@pytest.mark.parametrize("policy", ["canary", "ab"])
def test_served_arms_are_read_by_the_compiled_reader(policy):
    from precog.prediction_writer import BatchRows

    names = ["a", "b", "c"]
    writer, _ = _traffic_writer(names, policy)
    rows = _rows(np.random.default_rng(12), 60, names, 3)
    entities = [f"card-{i}" for i in range(60)]
    rows = BatchRows(**{**rows.__dict__, "entity_ids": entities,
                        "buckets": writer.models.plan.buckets(entities)})
    arms = set()
    for data in writer.encode(rows, scored_time=1):
        got = READER.decode(data)
        assert repr(got) == repr(CODEC.decode(data))
        arms.add(got["served"]["arm"])
    assert len(arms) > 1
