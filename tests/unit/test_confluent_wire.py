"""The Confluent wire format of the codecs and its settings (no registry needed here)."""

from __future__ import annotations

import numpy as np
import pytest

from precog.avro import Codec
from precog.errors import DecodeError, SchemaError
from precog.prediction_reader import PredictionReader
from precog.prediction_writer import PredictionWriter
from precog.settings import Settings
from precog.stack.apicurio import apicurio_pom
from tests.unit.test_prediction_writer import _rows, _writer

pytestmark = pytest.mark.unit

OUTCOME = {"event_id": "e1", "label": 1, "event_time": 0, "outcome_time": 5, "source": "x"}


def test_the_body_is_the_single_object_body_after_a_five_byte_header() -> None:
    single = Codec.for_schema("outcome")
    framed = single.confluent({1: 258})
    assert framed.wire_format == "confluent" and single.wire_format == "single-object"
    assert framed.encode_header() == b"\x00\x00\x00\x01\x02" == framed.header_of(1)
    assert framed.encode(OUTCOME) == framed.encode_header() + single.encode(OUTCOME)[10:]
    # the single-object codec is untouched
    assert single.encode_header()[:2] == b"\xc3\x01"


def test_a_framed_codec_reads_both_formats_and_names_what_it_refuses() -> None:
    single = Codec.for_schema("outcome")
    framed = single.confluent({1: 7})
    assert framed.decode(single.encode(OUTCOME)) == framed.decode(framed.encode(OUTCOME)) == OUTCOME
    with pytest.raises(DecodeError, match=r"^truncated header: 3 bytes, a Confluent-framed"):
        framed.decode(b"\x00\x00\x00")
    with pytest.raises(DecodeError, match=r"unknown schema id 8, expected "
                                          r"precog.outcomes.Outcome/v1 \(ids 7\)$"):
        framed.decode(b"\x00\x00\x00\x00\x08" + single.encode(OUTCOME)[10:])
    with pytest.raises(DecodeError, match=r"^trailing bytes: 1 after a valid record"):
        framed.decode(framed.encode(OUTCOME) + b"\x00")
    # a single-object codec knows no ids: a Confluent record is not single-object
    with pytest.raises(DecodeError, match=r"^bad marker 0000"):
        single.decode(framed.encode(OUTCOME))


def test_every_version_needs_an_id_and_framing_happens_once() -> None:
    codec = Codec.for_schema("outcome")
    with pytest.raises(SchemaError, match=r"no schema id for versions \[1\]"):
        codec.confluent({})
    with pytest.raises(SchemaError, match="Confluent-framed already"):
        codec.confluent({1: 1}).confluent({1: 1})


def test_the_compiled_writer_and_reader_take_the_five_byte_header() -> None:
    framed = Codec.for_schema("prediction").confluent({1: 2, 2: 4, 3: 3})  # v3 writes, id 3
    names = ["f0", "f1", "f2"]
    rows = _rows(np.random.default_rng(3), 40, names, 2)
    single = [r for r in _writer(names, 1).encode(rows, scored_time=5) if isinstance(r, bytes)]
    writer = PredictionWriter(framed, _writer(names, 1).models, names, spec_name="tx",
                              namespace="prod", event_schema="precog.events.Transaction/v1",
                              code_version="abc123", worker="host:1")
    mine = [r for r in writer.encode(rows, scored_time=5) if isinstance(r, bytes)]
    assert len(mine) == len(single) == 40
    assert all(m == b"\x00\x00\x00\x00\x03" + s[10:] for m, s in zip(mine, single, strict=True))
    reader = PredictionReader(framed)
    for data in mine:
        assert repr(reader.decode(data)) == repr(framed.decode(data))


def test_the_namespace_list_chooses_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES", "prod, parallel")
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_USERNAME", "u")
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_PASSWORD", "p")
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_SSL_CAFILE", "/ca.pem")
    assert Settings().wire_format == "confluent"
    assert Settings(namespace="parallel").wire_format == "confluent"
    assert Settings(namespace="t1").wire_format == "single-object"
    assert Settings().schema_registry.client_config() == {
        "url": "http://127.0.0.1:18081/apis/ccompat/v7", "basic.auth.user.info": "u:p",
        "ssl.ca.location": "/ca.pem"}
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES", "*")
    assert Settings(namespace="t1").wire_format == "confluent"
    assert Settings().stack_overridden()["schema-registry"] is False
    monkeypatch.setenv("PRECOG_SCHEMA_REGISTRY_URL", "https://sr:8081")
    assert Settings().stack_overridden()["schema-registry"] is True


def test_the_registry_url_follows_the_stack_port() -> None:
    s = Settings(stack={"schema_registry_port": 28081})
    assert s.schema_registry.url == "http://127.0.0.1:28081/apis/ccompat/v7"
    with pytest.raises(ValueError, match="ports must all differ"):
        Settings(stack={"schema_registry_port": 19092})


def test_the_apicurio_build_replaces_what_maven_central_lacks() -> None:
    pom = apicurio_pom("2.4.2.Final")
    for excluded in ("apicurio-common-app-components-config-index", "org.everit.json.schema"):
        assert f"<artifactId>{excluded}</artifactId></exclusion>" in pom
    assert "<artifactId>everit-json-schema</artifactId><version>1.14.2</version>" in pom
    assert "<artifactId>apicurio-registry</artifactId><version>2.4.2.Final</version>" in pom


def test_the_control_topic_name_is_the_adapters_own() -> None:
    from precog.io.kafka import CONTROL_TOPIC
    from precog.schema_registry import DATA_TOPIC_SCHEMAS

    assert DATA_TOPIC_SCHEMAS[CONTROL_TOPIC] == "model_control"
