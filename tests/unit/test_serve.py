"""`precog serve` without the network: keys, TLS settings, the HTTP shapes of an Avro record."""

from __future__ import annotations

from pathlib import Path

import fastavro
import pytest

from precog.avro import Codec
from precog.errors import ConfigError
from precog.serve.auth import KeyCheck
from precog.serve.schema import TensorError, events_from_v2, json_schema, v2_inputs
from precog.serve.server import tls_options
from precog.settings import Settings

pytestmark = pytest.mark.unit


def test_no_keys_no_server():
    with pytest.raises(ConfigError, match="PRECOG_SERVE_API_KEYS is empty"):
        KeyCheck(Settings(serve={"api_keys": " , "}).serve.keys())


def test_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("PRECOG_SERVE_API_KEYS", "alpha, beta")
    check = KeyCheck(Settings().serve.keys())
    assert check({"x-api-key": "beta"}) is None
    assert check({"authorization": "bearer alpha"}) is None
    assert check({"authorization": "Basic alpha"}) == (
        "no API key: send X-API-Key or Authorization: Bearer")
    assert check({"x-api-key": "alph"}) == "the API key is not valid"


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        tls_options(Settings(serve={"tls_certfile": cert}))
    with pytest.raises(ConfigError, match=r"PRECOG_SERVE_TLS_KEYFILE=.*k.pem: no such file"):
        tls_options(Settings(serve={"tls_certfile": cert, "tls_keyfile": tmp_path / "k.pem"}))
    key = tmp_path / "k.pem"
    key.write_text("y")
    assert tls_options(Settings(serve={"tls_certfile": cert, "tls_keyfile": key})) == {
        "ssl_certfile": str(cert), "ssl_keyfile": str(key)}


@pytest.mark.parametrize("name", ["transaction", "sensor_reading"])
def test_the_json_schema_and_tensors_follow_the_avro_record(name):
    raw = Codec.for_schema(name).writer.raw
    schema = json_schema(raw)
    assert list(schema["properties"]) == [f["name"] for f in raw["fields"]]
    assert schema["required"] == [f["name"] for f in raw["fields"] if "default" not in f]
    types = {f["name"]: fastavro.parse_schema(f["type"]) if isinstance(f["type"], dict)
             else f["type"] for f in raw["fields"]}
    for f in v2_inputs(raw):
        kind = types[f["name"]]
        kind = kind["type"] if isinstance(kind, dict) else kind
        assert f["datatype"] == {"string": "BYTES", "double": "FP64", "long": "INT64"}[kind]
        assert schema["properties"][f["name"]]["type"] == {
            "string": "string", "double": "number", "long": "integer"}[kind]


def test_a_nullable_field_and_an_enum():
    raw = {"name": "R", "fields": [
        {"name": "a", "type": ["null", "double"], "default": None},
        {"name": "b", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}}]}
    props = json_schema(raw)["properties"]
    assert props["a"] == {"type": ["number", "null"], "default": None}
    assert props["b"] == {"type": "string", "enum": ["x", "y"]}
    assert [t["datatype"] for t in v2_inputs(raw)] == ["FP64", "BYTES"]


@pytest.mark.parametrize(("inputs", "reason"), [
    ([], "inputs: a non-empty list of tensors is required"),
    ([{"name": "nope", "shape": [1], "data": [1]}], "inputs: 'nope' is not a field of Transaction"),
    ([{"name": "amount", "shape": [1, 1], "data": [1]}],
     "inputs: 'amount' needs a one-dimensional shape and a data list"),
    ([{"name": "amount", "shape": [1], "data": [1]},
      {"name": "event_id", "shape": [2], "data": ["a", "b"]}],
     "inputs: 'event_id' has 2 rows, the others 1"),
])
def test_tensors_that_are_not_a_table_are_refused(inputs, reason):
    with pytest.raises(TensorError) as err:
        events_from_v2(Codec.for_schema("transaction").writer.raw, inputs)
    assert str(err.value) == reason
