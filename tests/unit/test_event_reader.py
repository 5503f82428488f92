"""The compiled event reader returns what fastavro returns, and the codec's errors."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from precog.avro import Codec
from precog.errors import DecodeError
from precog.event_reader import EventReader
from precog.simulate import SimConfig, simulator_for
from precog.spec import SPEC_DIR, load_spec

pytestmark = pytest.mark.unit

SPECS = ("transactions.yaml", "sensors.yaml")


def _outcome(reader: EventReader, codec: Codec, data: bytes | None) -> str:
    """What decoding ``data`` gives: the record's repr (NaN-safe), or the error's text."""
    try:
        return "ok " + repr(reader.decode(data))
    except DecodeError as exc:
        return f"error {exc}"


def _same(reader: EventReader, codec: Codec, data: bytes | None) -> None:
    mine = _outcome(reader, codec, data)
    try:
        theirs = "ok " + repr(codec.decode(data))
    except DecodeError as exc:
        theirs = f"error {exc}"
    assert mine == theirs, data


def corruptions(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    """``n`` copies of ``data`` with 1-3 bytes changed, inserted or deleted after the
    10-byte header (seeded by ``rng``)."""
    out = []
    for _ in range(n):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(10, len(bad))
            op = rng.random()
            if op < 0.6:
                bad[at] = rng.randrange(256)
            elif op < 0.8:
                bad.insert(at, rng.randrange(256))
            else:
                del bad[at]
        out.append(bytes(bad))
    return out


def _simulated(spec_file: str, n: int) -> tuple[Codec, list[dict]]:
    spec = load_spec(SPEC_DIR / spec_file)
    sim = simulator_for(SimConfig(seed=7), spec)
    return Codec.for_schema(spec.event.schema_name), [e.record for e in sim.events(n)]


def _text(rng: random.Random) -> str:
    """Short and long strings, ASCII and multi-byte (lengths on both sides of 63 bytes)."""
    alphabet = "ab\u00e9\u4e2d\U0001f600 \x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 5, 31, 32, 64, 200))))


_DOUBLES = (0.0, -0.0, 1.5, -1e300, 5e-324, math.inf, -math.inf, math.nan, 2.0**53 + 1)
_LONGS = (0, -1, 1, 63, 64, -64, -65, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63))


def _hostile_values(codec: Codec, base: dict, seed: int) -> list[dict]:
    """``base`` with every field replaced by extreme values of its type, seeded."""
    rng = random.Random(seed)
    out = []
    for _ in range(200):
        rec = dict(base)
        for f in codec.writer.raw["fields"]:
            t = f["type"]["type"] if isinstance(f["type"], dict) else f["type"]
            if t == "string":
                rec[f["name"]] = _text(rng)
            elif t == "double":
                rec[f["name"]] = rng.choice(_DOUBLES + (rng.uniform(-1e6, 1e6),))
            elif t == "long":
                rec[f["name"]] = rng.choice(_LONGS + (rng.randrange(-(2**63), 2**63),))
        out.append(rec)
    return out


@pytest.mark.parametrize("spec_file", SPECS)
def test_same_dicts_as_fastavro(spec_file):
    codec, records = _simulated(spec_file, 300)
    reader = EventReader(codec)
    assert reader.compiled
    for rec in records + _hostile_values(codec, records[0], seed=len(spec_file)):
        data = codec.encode(rec)
        got, expected = reader.decode(data), codec.decode(data)
        assert repr(got) == repr(expected)
        assert list(got) == list(expected)  # the fields in schema order
        assert codec.encode(got) == data


@pytest.mark.parametrize("spec_file", SPECS)
def test_every_truncation_and_extension_gets_the_codecs_answer(spec_file):
    codec, records = _simulated(spec_file, 3)
    reader = EventReader(codec)
    for data in (codec.encode(r) for r in records):
        for cut in range(len(data) + 1):
            _same(reader, codec, data[:cut])
        for extra in (b"\x00", b"\x80", b"\xff" * 3):
            _same(reader, codec, data + extra)
    for data in (None, b"", b"\xc3", b"\xc3\x01" + bytes(8) + b"\x00"):
        _same(reader, codec, data)


@pytest.mark.parametrize("spec_file", SPECS)
def test_corrupted_bodies_get_the_codecs_answer(spec_file):
    """Seeded byte flips, insertions and deletions after the header: the same record or the
    same error as fastavro, every time (invalid UTF-8, huge lengths, broken varints)."""
    codec, records = _simulated(spec_file, 20)
    reader = EventReader(codec)
    rng = random.Random(11)
    for rec in records:
        for bad in corruptions(codec.encode(rec), rng, 150):
            _same(reader, codec, bad)


def test_long_varints_are_read_like_fastavro():
    """Overlong and 10-byte varints in the long field: the fast path never disagrees."""
    codec, records = _simulated("transactions.yaml", 1)
    reader = EventReader(codec)
    data = codec.encode(records[0])
    head, tail = data[:-6], data[-6:]  # event_time is the last field: a 6-byte varint
    assert codec.decode(head + tail) == records[0]
    variants = [b"\x80\x00", b"\xff" * 9 + b"\x01", b"\xff" * 9 + b"\x7f", b"\x80" * 9 + b"\x02",
                b"\xff" * 10 + b"\x01", b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00"]
    for varint in variants:
        _same(reader, codec, head + varint)


def _codec_for(tmp_path, fields: list[dict]) -> Codec:
    schema = {"type": "record", "name": "Probe", "namespace": "precog.tests", "fields": fields}
    (tmp_path / "probe.v1.avsc").write_text(json.dumps(schema))
    return Codec.for_schema("probe", schema_dir=tmp_path)


def test_int_and_float_fields(tmp_path):
    codec = _codec_for(tmp_path, [{"name": "i", "type": "int"}, {"name": "f", "type": "float"},
                                  {"name": "s", "type": "string"}])
    reader = EventReader(codec)
    assert reader.compiled
    for rec in ({"i": 2**31 - 1, "f": 0.1, "s": "x"}, {"i": -(2**31), "f": -math.inf, "s": ""},
                {"i": 0, "f": 3.4e38, "s": "\u00e9" * 40}):
        data = codec.encode(rec)
        assert repr(reader.decode(data)) == repr(codec.decode(data))
    header = codec.encode_header()
    # an int slot holding a value beyond 32 bits, written by a broken producer
    for body in (b"\x80\x80\x80\x80\x10" + struct.pack("<f", 1.0) + b"\x00",
                 b"\xfe\xff\xff\xff\x0f" + struct.pack("<f", 1.0) + b"\x00"):
        _same(reader, codec, header + body)


def test_schemas_that_are_not_flat_primitives_go_to_the_codec(tmp_path):
    codec = _codec_for(tmp_path, [{"name": "s", "type": "string"},
                                  {"name": "maybe", "type": ["null", "string"]}])
    reader = EventReader(codec)
    assert not reader.compiled and reader.source is None
    data = codec.encode({"s": "a", "maybe": None})
    assert reader.decode(data) == codec.decode(data) == {"s": "a", "maybe": None}
    _same(reader, codec, data[:-1])
