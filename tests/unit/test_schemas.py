"""The Avro contracts: every schema round-trips, any Avro library reads it, evolution is checked."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import avro.io
import avro.schema
import fastavro
import pytest
from fastavro.utils import generate_many

from precog.avro import (
    SCHEMA_DIR,
    Codec,
    _fingerprint,
    _plain,
    evolution_problems,
    schema_versions,
)
from precog.errors import DecodeError

pytestmark = pytest.mark.unit

NAMES = sorted(schema_versions())


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(20261121)  # fastavro's record generator draws from the global RNG


def test_every_topic_has_a_contract():
    assert {"transaction", "outcome", "prediction", "dead_letter", "model_control", "manifest",
            "metrics", "alert", "labeled"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_random_records_round_trip_exactly(name):
    codec = Codec.for_schema(name)
    plain = fastavro.parse_schema(_plain(codec.writer.raw))
    records = list(generate_many(plain, 50))
    for rec in records:
        assert codec.decode(codec.encode(rec)) == rec


@pytest.mark.parametrize("name", NAMES)
def test_apache_avro_reads_the_single_object_encoding(name):
    """Downstream consumers need nothing of precog: the .avsc and a standard library."""
    codec = Codec.for_schema(name)
    rec = next(iter(generate_many(fastavro.parse_schema(_plain(codec.writer.raw)), 1)))
    data = codec.encode(rec)
    assert data[:2] == b"\xc3\x01"
    # times as plain longs, as precog reads them (Apache's reader would make datetimes)
    schema = avro.schema.parse(json.dumps(_plain(codec.writer.raw)))
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert decoded == codec.decode(data) == rec


def test_the_header_carries_the_specs_crc_64_avro_fingerprint():
    # the Avro specification's test vector: "int" -> 0x7275d51a3f395c8f, little-endian
    assert _fingerprint(fastavro.parse_schema("int")) == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_a_record_of_another_schema_is_refused_not_misread():
    outcome = Codec.for_schema("outcome")
    data = outcome.encode({"event_id": "e", "label": 1, "event_time": 1, "outcome_time": 2,
                           "source": "s"})
    with pytest.raises(DecodeError, match="unknown schema"):
        Codec.for_schema("transaction").decode(data)
    with pytest.raises(DecodeError, match="corrupt"):
        outcome.decode(data[:-3])


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (lambda d: None, "empty value (tombstone): null"),
        (lambda d: b"", "empty value (tombstone): 0 bytes"),
        (lambda d: d[:1], "truncated header: 1 byte, a single-object record starts with 10"),
        (lambda d: d[:9], "truncated header: 9 bytes, a single-object record starts with 10"),
        (lambda d: b"\xc3\x02" + d[2:],
         "bad marker c302 (expected c301): not an Avro single-object record"),
        (lambda d: b"{", "bad marker 7b (expected c301): not an Avro single-object record"),
        (lambda d: d + b"\x01",
         "trailing bytes: 1 after a valid record (precog.outcomes.Outcome/v1)"),
        (lambda d: d[:-3], "corrupt precog.outcomes.Outcome/v1 record at byte 16 of 16"
                           " (the body ends early): EOFError: Expected 3 bytes, read 0"),
        (lambda d: d[:10] + b"\x01" + d[11:], "corrupt precog.outcomes.Outcome/v1 record at"
                                            " byte 19 of 19 (a negative length, -1: a corrupt"
                                            " length prefix): EOFError: Expected -1 bytes,"
                                            " read 8"),
    ],
)
def test_each_undecodable_value_has_its_own_reason(cut, reason):
    outcome = Codec.for_schema("outcome")
    data = outcome.encode({"event_id": "e", "label": 1, "event_time": 1, "outcome_time": 2,
                           "source": "sim"})
    with pytest.raises(DecodeError) as err:
        outcome.decode(cut(data))
    assert str(err.value) == reason


def test_the_shipped_schemas_follow_the_evolution_rules():
    assert evolution_problems() == []


def _evolve(tmp_path: Path, new_field: dict) -> Path:
    d = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, d)
    raw = json.loads((d / "outcome.v1.avsc").read_text())
    raw["fields"].append(new_field)
    (d / "outcome.v2.avsc").write_text(json.dumps(raw))
    return d


def test_a_new_field_without_default_is_caught(tmp_path):
    d = _evolve(tmp_path, {"name": "reason", "type": "string"})
    problems = evolution_problems(d)
    assert len(problems) == 1
    assert problems[0].startswith("outcome: v2 is not backward compatible with v1")
    assert "reason" in problems[0]


def test_a_type_change_is_caught(tmp_path):
    d = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, d)
    raw = json.loads((d / "outcome.v1.avsc").read_text())
    raw["fields"][1]["type"] = "string"  # label: int -> string
    (d / "outcome.v2.avsc").write_text(json.dumps(raw))
    assert any("label" in p or "/fields/1" in p for p in evolution_problems(d))


def test_a_new_field_with_a_default_evolves_and_old_data_reads_with_it(tmp_path):
    d = _evolve(tmp_path, {"name": "reason", "type": "string", "default": "unknown"})
    assert evolution_problems(d) == []
    v1 = Codec(schema_versions(d)["outcome"][:1])
    v2 = Codec(schema_versions(d)["outcome"])
    rec = {"event_id": "e", "label": 0, "event_time": 1, "outcome_time": 2, "source": "s"}
    assert v2.decode(v1.encode(rec)) == {**rec, "reason": "unknown"}
