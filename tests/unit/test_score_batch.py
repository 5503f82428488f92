"""``precog score-batch`` on files: formats, parity with the streaming path, resume, rejects.

Real models (the spec's LightGBM leader and logistic challenger, trained on a seeded
history into a temporary registry), seeded events with invalid ones mixed in, no network.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from precog.avro import Codec
from precog.batch_scoring import BatchRequest, run_batch
from precog.batch_scoring.state import read_snapshot
from precog.errors import ConfigError
from precog.features import EntityState, Featurizer
from precog.history import read_avro, write_records
from precog.registry import ModelRegistry
from precog.scoring import EventContext, make_model_set, prediction_record, score_batch
from precog.settings import Settings
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from precog.validation import check_event, failure_reason
from tests.unit.reference_features import reference_featurize

pytestmark = pytest.mark.unit

MODELS = {"revision": 7, "leader": {"model_id": "fraud-lgbm", "version": 1},
          "challengers": [{"model_id": "fraud-logreg", "version": 1}]}
N_EVENTS = 900
CHUNK = 128
#: rows made invalid (index -> change): each breaks one of the spec's checks
INVALID = {13: {"amount": -5.0}, 200: {"country": "de"}, 201: {"channel": "fax"},
           640: {"amount": 90_000.0}}


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, spec: PipelineSpec) -> dict[str, Any]:
    """A trained registry, and seeded events (valid and invalid) in a history file."""
    from precog.pipelines.train import labeled_frame, train_frame

    from precog.simulate import SimConfig, write_history

    root = tmp_path_factory.mktemp("score-batch")
    settings = Settings(namespace="unitbatch", registry_dir=root / "registry",
                        code_version="test")
    write_history(root / "train", 3000, seed=3, end_ms=1_790_000_000_000, progress=False,
                  config=SimConfig(positive_rate=0.08))
    train_frame(settings, spec, labeled_frame(spec, root / "train"), es=None, publish=False)
    write_history(root / "score", N_EVENTS, seed=11, end_ms=1_791_000_000_000, progress=False)
    codec = Codec.for_schema(spec.event.schema_name)
    events = read_avro(root / "score" / "events.avro", codec)
    for i, change in INVALID.items():
        events[i] = {**events[i], **change}
    return {"root": root, "settings": settings, "events": events, "codec": codec}


def write_input(lab: dict[str, Any], fmt: str, events: list[dict[str, Any]] | None = None,
                name: str = "events") -> Path:
    rows = lab["events"] if events is None else events
    path = lab["root"] / f"{name}.{fmt}"
    if fmt == "avro":
        write_records(path, lab["codec"], rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()}
                        for r in rows)
    else:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def request(lab: dict[str, Any], spec: PipelineSpec, source: Path, out: Path,
            **kw: Any) -> BatchRequest:
    given = {"models": MODELS, "chunk_size": CHUNK, "progress": False, **kw}
    return BatchRequest(settings=lab["settings"], spec=spec, out=out, input=source, **given)


def rows_of(out: Path) -> list[dict[str, Any]]:
    """The output's prediction records, in order (Parquet dataset or Avro file)."""
    if out.suffix == ".avro":
        with open(out, "rb") as fh:
            return list(fastavro.reader(fh))
    return pq.read_table(out).to_pylist()


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what differs between runs of the same events: when and from where."""
    prov = {k: v for k, v in row["provenance"].items()
            if k not in ("source_topic", "worker", "channel")}
    return {**row, "scored_time": None, "provenance": prov}


@pytest.fixture(scope="module")
def baseline(lab: dict[str, Any], spec: PipelineSpec) -> list[dict[str, Any]]:
    out = lab["root"] / "baseline.parquet"
    summary = run_batch(request(lab, spec, write_input(lab, "avro"), out))
    assert summary.complete and summary.rows == N_EVENTS
    return rows_of(out)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_input_format_gives_the_same_output(lab, spec, baseline, fmt):
    out = lab["root"] / f"from-{fmt}.parquet"
    summary = run_batch(request(lab, spec, write_input(lab, fmt), out))
    assert (summary.rows, summary.predictions, summary.rejects) == (
        N_EVENTS, N_EVENTS - len(INVALID), len(INVALID))
    assert [comparable(r) for r in rows_of(out)] == [comparable(r) for r in baseline]


def test_avro_output_has_the_parquet_rows(lab, spec, baseline):
    out = lab["root"] / "out.avro"
    run_batch(request(lab, spec, write_input(lab, "avro"), out))
    assert [comparable(r) for r in rows_of(out)] == [comparable(r) for r in baseline]


def streaming_records(lab: dict[str, Any], spec: PipelineSpec, source: str
                      ) -> list[dict[str, Any]]:
    """The events through the streaming path's pieces, one event at a time.

    ``Featurizer.featurize`` event by event (the state chained per entity), one
    ``score_batch`` per event, ``prediction_record`` per event; invalid events skipped.
    Also checks every feature vector against the tests' plain oracle.
    """
    fz = Featurizer(spec)
    registry = ModelRegistry(lab["settings"].registry_dir)
    models = make_model_set(7, registry.load("fraud-lgbm", 1), [registry.load("fraud-logreg", 1)],
                            fz.names)
    states: dict[str, EntityState] = {}
    oracle: dict[str, EntityState] = {}
    out = []
    ev = spec.event
    for i, event in enumerate(lab["events"]):
        if check_event(spec, event, now_ms=1_792_000_000_000):
            continue
        entity = str(event[ev.entity_field])
        vector, states[entity] = fz.featurize(states.get(entity), event)
        values, ages, oracle[entity] = reference_featurize(spec, oracle.get(entity), event)
        assert (vector.values, vector.ages_ms) == (values, ages)
        X = np.array([vector.values])
        scores = [float(s[0]) for s in score_batch(models, X)]
        out.append(prediction_record(
            spec_name=spec.name, event_id=event[ev.id_field], entity_id=entity,
            event_time=event[ev.time_field], scored_time=0, models=models, scores=scores,
            feature_names=fz.names, values=vector.values, ages_ms=vector.ages_ms,
            origin=EventContext(source, 0, i), namespace="unitbatch",
            event_schema=lab["codec"].writer.label, code_version="test", worker="w"))
    return out


def test_rows_equal_the_streaming_path_bit_for_bit(lab, spec, baseline):
    source = f"file:{(lab['root'] / 'events.avro').resolve()}"
    expected = streaming_records(lab, spec, source)
    assert len(expected) == len(baseline) == N_EVENTS - len(INVALID)
    for got, want in zip(baseline, expected, strict=True):
        assert got["provenance"]["source_topic"] == source
        assert got["provenance"]["worker"].startswith("score-batch@")
        assert got["provenance"]["channel"] == "batch"
        # == on floats: bit-identical features and scores (NaN does not occur here)
        assert comparable(got) == comparable(want)


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_interrupted_run_resumes_and_writes_each_row_once(lab, spec, baseline, fmt):
    source = write_input(lab, "avro")
    out = lab["root"] / f"resumed.{fmt}"
    first = run_batch(request(lab, spec, source, out, max_chunks=2, resume=False))
    assert (first.complete, first.chunks, first.rows) == (False, 2, 2 * CHUNK)

    def crash(index: int) -> None:
        if index == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(request(lab, spec, source, out, after_chunk=crash))
    # what an interrupted write leaves behind is past the checkpoint: cut away on resume
    if fmt == "avro":
        with open(out, "ab") as fh:
            fh.write(b"half a block")
    else:
        (out / "part-00005.parquet").write_bytes(b"half a part")
        (out / "part-00006.parquet.tmp").write_bytes(b"")
    last = run_batch(request(lab, spec, source, out))
    assert last.complete and last.resumed_at_chunk == 5
    assert (last.rows, last.predictions, last.rejects) == (
        N_EVENTS, N_EVENTS - len(INVALID), len(INVALID))
    got = rows_of(out)
    assert len({r["prediction_id"] for r in got}) == len(got)
    assert [comparable(r) for r in got] == [comparable(r) for r in baseline]
    rejected = [json.loads(line) for line in out.with_name(out.name + ".rejects.jsonl")
                .read_text().splitlines()]
    assert [r["offset"] for r in rejected] == sorted(INVALID)
    again = run_batch(request(lab, spec, source, out))
    assert again.complete and again.rows_this_run == 0


def test_rejects_carry_the_dead_letter_reasons(lab, spec):
    events = [dict(e) for e in lab["events"][:300]]
    path = write_input(lab, "csv", events, name="garbage")
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(str(events[4]["amount"]), "lots", 1)  # row 4: not a double
    path.write_text("\n".join(lines) + "\n")
    out = lab["root"] / "garbage.parquet"
    summary = run_batch(request(lab, spec, path, out, resume=False))
    rejected = [json.loads(line) for line in
                out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    now = json.loads(out.with_name(out.name + ".checkpoint.json").read_text()
                     )["run"]["validated_at"]
    assert [(r["offset"], r["stage"], r["error_class"]) for r in rejected] == [
        (4, "decode", "DecodeError"), (13, "validate", "ValidationError"),
        (200, "validate", "ValidationError"), (201, "validate", "ValidationError")]
    assert "record 4: field amount: 'lots' is not double" in rejected[0]["error_message"]
    for r in rejected[1:]:
        assert r["error_message"] == failure_reason(check_event(spec, events[r["offset"]], now))
        assert r["record"]["event_id"] == events[r["offset"]]["event_id"]
    assert rejected[1]["error_message"] == "amount.min: -5.0 is below 0.01"
    assert (summary.rows, summary.predictions, summary.rejects) == (300, 296, 4)
    assert summary.reject_stages == {"decode": 1, "validate": 3}
    assert summary.reconciliation() == ("rows in 300 = predictions 296 + rejects 4"
                                        " (decode 1, validate 3): ok")


def test_a_snapshot_continues_where_the_first_run_ended(lab, spec, baseline):
    half = 450
    first = write_input(lab, "avro", lab["events"][:half], name="first-half")
    second = write_input(lab, "avro", lab["events"][half:], name="second-half")
    snap = lab["root"] / "states.jsonl"
    run_batch(request(lab, spec, first, lab["root"] / "first.parquet", state_out=snap))
    states = read_snapshot(snap)
    assert all(s.applied == {} for s in states.values())  # file rows have no Kafka offsets
    out = lab["root"] / "second.parquet"
    run_batch(request(lab, spec, second, out, state="snapshot", snapshot=snap))
    tail = [r for r in baseline if r["provenance"]["offset"] >= half]

    def features(rows: list[dict[str, Any]]) -> list[Any]:
        return [(r["event_id"], r["features"], r["leader"], r["challengers"]) for r in rows]

    assert features(rows_of(out)) == features(tail)
    cold = lab["root"] / "second-cold.parquet"
    run_batch(request(lab, spec, second, cold))
    assert features(rows_of(cold)) != features(tail)  # without the snapshot: other features


def test_refuses_another_run_in_the_same_output(lab, spec):
    source = write_input(lab, "avro")
    out = lab["root"] / "mixed.parquet"
    run_batch(request(lab, spec, source, out, max_chunks=1, resume=False))
    other = {**MODELS, "challengers": []}
    with pytest.raises(ConfigError, match="differs in models"):
        run_batch(request(lab, spec, source, out, models=other))
    with pytest.raises(ConfigError, match="differs in chunk_size"):
        run_batch(request(lab, spec, source, out, chunk_size=CHUNK + 1))
    out.with_name(out.name + ".checkpoint.json").unlink()
    with pytest.raises(ConfigError, match="has no checkpoint next to it: --restart"):
        run_batch(request(lab, spec, source, out))


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "o.parquet"], "give exactly one of --input FILE and --topic"),
    (["--input", "nope.avro", "--out", "o", "--leader", "m:1"], "--input nope.avro: no such"),
    (["--input", "x", "--out", "o", "--leader", "m"], "--leader 'm': use MODEL:VERSION"),
    (["--input", "x", "--out", "o", "--challenger", "m:1"], "--challenger needs --leader"),
    (["--input", "x", "--out", "o", "--start", "2026-01-01"], "need --topic"),
    (["--input", "x", "--out", "o", "--from-redis", "--from-snapshot", "s"], "not both"),
    (["--input", "x", "--out", "o", "--format", "orc", "--leader", "m:1"], "--format 'orc'"),
    (["--input", "x", "--out", "o", "--chunk-size", "0", "--leader", "m:1"],
     "--chunk-size must be at least 1"),
    (["--input", "e.avro", "--out", "e.avro", "--leader", "m:1"],
     "--out e.avro would overwrite --input e.avro"),
    (["--topic", "events.transactions", "--start", "soon", "--out", "o"], "--start: not a time"),
    (["--input", "x", "--out", "o", "--index", "--index-namespace", "Bad NS"],
     "bad --index-namespace 'Bad NS': must be lowercase letters"),
    (["--input", "e.avro", "--input-format", "orc", "--out", "o", "--leader", "m:1"],
     "--input-format: unknown format 'orc'"),
])
def test_bad_arguments_are_one_line_errors_naming_the_option(args, message, tmp_path,
                                                             monkeypatch):
    from precog.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.avro").write_bytes(b"")
    result = CliRunner().invoke(app, ["score-batch", *args])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_state_watermarks_of_a_snapshot_do_not_skip_file_rows(lab, spec):
    """A snapshot from Redis carries Kafka offsets; file rows must never look redelivered."""
    from collections import Counter

    events = lab["events"][:300]
    source = write_input(lab, "avro", events, name="watermarked")
    entity = Counter(str(e[spec.event.entity_field]) for e in events).most_common(1)[0][0]
    snap = lab["root"] / "watermarked.jsonl"
    from precog.batch_scoring.state import write_snapshot

    write_snapshot(snap, {entity: EntityState(last_time=0, applied={"0": 10**9})})
    out = lab["root"] / "watermarked.parquet"
    run_batch(request(lab, spec, source, out, state="snapshot", snapshot=snap))
    mine = [r for r in rows_of(out) if r["entity_id"] == entity]
    assert len(mine) > 1
    count = [next(f["value"] for f in r["features"] if f["name"] == "count_24h") for r in mine]
    assert count[1] > 0  # the first row moved the state: not taken for a redelivery


def test_a_chunk_without_any_valid_event_writes_an_empty_part(lab, spec):
    events = [{**e, "amount": -1.0} for e in lab["events"][:CHUNK]] + lab["events"][CHUNK:200]
    source = write_input(lab, "avro", events, name="first-chunk-invalid")
    for fmt in ("parquet", "avro"):
        out = lab["root"] / f"first-chunk-invalid-out.{fmt}"
        summary = run_batch(request(lab, spec, source, out, resume=False))
        assert (summary.rows, summary.predictions, summary.rejects) == (200, 200 - CHUNK, CHUNK)
        assert [r["provenance"]["offset"] for r in rows_of(out)] == list(range(CHUNK, 200))


def test_restart_never_deletes_a_directory_of_other_files(lab, spec, tmp_path):
    source = write_input(lab, "avro", lab["events"][:10], name="tiny")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files than Parquet parts"):
        run_batch(request(lab, spec, source, tmp_path, resume=False))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rows_equal_what_the_score_agent_publishes_for_the_same_events(lab, spec, baseline):
    """The worker's own handler (``score_events``), micro-batches of 500 through an in-memory
    store and producer: the same predictions (but for when and where), the same rejects."""
    import asyncio

    from precog.services.agents.score import score_events
    from precog.services.runtime import Runtime

    from tests.unit.memory import MemoryStore, RecordingProducer, event

    registry = ModelRegistry(lab["settings"].registry_dir)
    fz = Featurizer(spec)
    models = make_model_set(7, registry.load("fraud-lgbm", 1), [registry.load("fraud-logreg", 1)],
                            fz.names)
    rt = Runtime(settings=Settings(namespace="unitbatch"), spec=spec, app=None,  # type: ignore[arg-type]
                 models=models, code_version="test")
    store, producer = MemoryStore(), RecordingProducer()
    codec = lab["codec"]
    records = [event("unitbatch.events.transactions", 0, i, codec.encode(e),
                     key=e["card_id"].encode(), timestamp=0.0)
               for i, e in enumerate(lab["events"])]
    for start in range(0, len(records), 500):
        asyncio.run(score_events(rt, store, producer, fz, records[start:start + 500]))
    published = [Codec.for_schema("prediction").decode(s.value)
                 for s in producer.on(rt.settings.topic("predictions"))]
    assert [comparable(p) for p in published] == [comparable(r) for r in baseline]
    dead = [Codec.for_schema("dead_letter").decode(s.value)
            for s in producer.on(rt.settings.topic("dlq"))]
    out = lab["root"] / "baseline.parquet"
    rejected = [json.loads(line) for line in
                out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    assert [(d["offset"], d["stage"], d["error_class"], d["error_message"]) for d in dead] == [
        (r["offset"], r["stage"], r["error_class"], r["error_message"]) for r in rejected]
