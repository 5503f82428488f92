"""``precog score-batch`` on inputs and outputs that go wrong: each is one line, never a traceback
or an "ok" for rows that are not there (docs/batch-scoring.md "Errors").

The models and events are those of ``test_score_batch`` (its module fixtures, trained here
once more); no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from precog.batch_scoring import TopicRange, run_batch
from precog.errors import ConfigError
from precog.history import write_records
from precog.settings import get_settings
from precog.spec import SPEC_DIR
from tests.unit import test_score_batch as base
from tests.unit.test_score_batch import CHUNK, N_EVENTS, request, rows_of, write_input

lab, spec = base.lab, base.spec  # its module fixtures: the trained registry, the events

pytestmark = pytest.mark.unit


def one_line_error(exc: BaseException | None, *parts: str) -> str:
    assert isinstance(exc, ConfigError), repr(exc)
    text = str(exc)
    assert "\n" not in text
    for part in parts:
        assert part in text, text
    return text


@pytest.fixture
def cli(lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``precog score-batch ARGS --leader fraud-lgbm:1`` in tmp_path, on the lab's registry."""
    from precog.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRECOG_REGISTRY_DIR", str(lab["settings"].registry_dir))
    monkeypatch.setenv("PRECOG_NAMESPACE", "unitbatch")
    monkeypatch.setenv("PRECOG_CODE_VERSION", "test")
    get_settings.cache_clear()

    def run(*args: str, leader: tuple[str, ...] = ("--leader", "fraud-lgbm:1")) -> Result:
        return CliRunner().invoke(app, ["score-batch", *args, *leader, "--quiet",
                                        "--spec", str(SPEC_DIR / "transactions.yaml")])

    yield run
    get_settings.cache_clear()


# 1. --out: its directory is created, like --state-out's; one line when it cannot be

def test_the_directory_of_out_is_created(lab, spec, tmp_path):
    source = write_input(lab, "avro", lab["events"][:50], name="few")
    for out in (tmp_path / "a" / "b" / "scores", tmp_path / "c" / "d" / "scores.avro"):
        summary = run_batch(request(lab, spec, source, out))
        assert summary.complete and len(rows_of(out)) == summary.predictions == 49  # 13: invalid


def test_an_out_that_cannot_be_written_is_one_line_naming_it(lab, spec, tmp_path):
    source = write_input(lab, "avro", lab["events"][:50], name="few")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, tmp_path / "file" / "scores"))
    one_line_error(exc.value, f"--out {tmp_path}/file/scores: cannot create its directory",
                   "a file is in the way")
    with pytest.raises(ConfigError) as exc:  # /proc exists, but takes no new files
        run_batch(request(lab, spec, source, Path("/proc/x.avro")))
    one_line_error(exc.value, "--out /proc/x.avro: cannot write /proc/x.avro.rejects.jsonl")
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, tmp_path / "s.parquet",
                          state_out=tmp_path / "file" / "x.snap"))
    one_line_error(exc.value, "--state-out", "cannot create its directory")
    assert not (tmp_path / "s.parquet").exists()  # refused before anything is written


# 2. resume: what the checkpoint counts must be on disk

def test_resume_refuses_when_a_part_the_checkpoint_counts_is_missing(lab, spec, tmp_path):
    source = write_input(lab, "avro")
    out = tmp_path / "scores"
    run_batch(request(lab, spec, source, out, max_chunks=2))
    (out / "part-00000.parquet").unlink()
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, out))
    one_line_error(exc.value, f"--out {out}: part-00000.parquet is missing, though"
                   " scores.checkpoint.json records 2 chunks", "--restart")
    run_batch(request(lab, spec, source, out, resume=False))  # --restart: a whole run
    assert len(rows_of(out)) == N_EVENTS - 4
    # a complete run run again checks too: no "ok" for rows not on disk
    short = pq.read_table(out / "part-00001.parquet").slice(0, 3)
    pq.write_table(short, out / "part-00001.parquet")
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, out))
    # rows 200 and 201 are invalid
    one_line_error(exc.value, f"part-00001.parquet has 3 rows, not {CHUNK - 2}")


def test_resume_refuses_a_cut_avro_or_rejects_file(lab, spec, tmp_path):
    source = write_input(lab, "avro")
    out = tmp_path / "scores.avro"
    run_batch(request(lab, spec, source, out, max_chunks=2))
    rejects = out.with_name(out.name + ".rejects.jsonl")
    assert rejects.stat().st_size > 0  # row 13 is invalid
    full = out.read_bytes()
    out.write_bytes(full[:-10])
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, out))
    one_line_error(exc.value, f"the file is {len(full) - 10:,} bytes, shorter than the"
                   f" {len(full):,} written")
    out.write_bytes(full)
    rejects.unlink()
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, out))
    one_line_error(exc.value, "scores.avro.rejects.jsonl is missing")


def test_a_checkpoint_without_part_rows_still_resumes(lab, spec, tmp_path):
    """Checkpoints written before ``parts`` existed: the parts are checked to exist only."""
    source = write_input(lab, "avro")
    out = tmp_path / "scores"
    run_batch(request(lab, spec, source, out, max_chunks=2))
    path = out.with_name("scores.checkpoint.json")
    doc = json.loads(path.read_text())
    assert doc.pop("parts") == [CHUNK - 1, CHUNK - 2]  # rows 13, 200, 201: invalid
    path.write_text(json.dumps(doc))
    summary = run_batch(request(lab, spec, source, out))
    assert summary.complete and summary.rows == N_EVENTS and len(rows_of(out)) == N_EVENTS - 4


# 3. no tracebacks: a missing snapshot, too many threads, a checkpoint of another shape

def test_a_missing_snapshot_is_one_line(lab, spec, tmp_path):
    source = write_input(lab, "avro", lab["events"][:50], name="few")
    with pytest.raises(ConfigError) as exc:
        request(lab, spec, source, tmp_path / "o", state="snapshot",
                snapshot=tmp_path / "nonexistent")
    one_line_error(exc.value, f"--from-snapshot {tmp_path}/nonexistent: no such file")
    with pytest.raises(ConfigError) as exc:
        request(lab, spec, source, tmp_path / "o", state="snapshot", snapshot=tmp_path)
    one_line_error(exc.value, "a directory, not a snapshot file")


def test_model_threads_are_bounded_by_the_cpus(lab, spec, tmp_path, monkeypatch):
    from precog.batch_scoring.job import max_model_threads

    source = write_input(lab, "avro", lab["events"][:50], name="few")
    most = max_model_threads()
    with pytest.raises(ConfigError) as exc:
        request(lab, spec, source, tmp_path / "o", model_threads=100_000)
    one_line_error(exc.value, f"--model-threads 100000: at most {most} here")
    assert run_batch(request(lab, spec, source, tmp_path / "o", model_threads=most)).complete
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert max_model_threads() == 1


@pytest.mark.parametrize(("text", "why"), [
    ("[]", "a JSON list, not an object"),
    ("{not json", "Expecting property name"),
    ('{"version": 1, "run": []}', "run is a list"),
    ('{"version": 1, "run": {}}', "run lacks its models"),
    ('{"version": 1, "run": {"models": {}, "validated_at": 1}, "chunks": "2"}',
     "chunks is a str"),
    ('{"version": 1, "run": {}, "extra": 1}', "unexpected keyword argument 'extra'"),
])
def test_a_checkpoint_of_another_shape_is_one_line(lab, spec, tmp_path, text, why):
    source = write_input(lab, "avro", lab["events"][:50], name="few")
    (tmp_path / "o.checkpoint.json").write_text(text)
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, source, tmp_path / "o"))
    one_line_error(exc.value, "o.checkpoint.json: not a score-batch checkpoint (", why,
                   "--restart starts over")


# 4. the leader is not its own challenger

def test_the_leader_cannot_be_its_own_challenger(cli, lab):
    result = cli("--input", "e.avro", "--out", "o",
                 leader=("--leader", "fraud-lgbm:1", "--challenger", "fraud-lgbm@1"))
    one_line_error(result.exception, "--challenger fraud-lgbm:1 is the leader, not a possible"
                   " challenger")
    result = cli("--input", "e.avro", "--out", "o", leader=(
        "--leader", "fraud-lgbm:1", "--challenger", "fraud-logreg:1", "--challenger",
        "fraud-logreg:1"))
    one_line_error(result.exception, "--challenger fraud-logreg:1 is given twice")


# 5. a range whose start is after its end

@pytest.mark.parametrize(("args", "message"), [
    (["--start-offset", "50", "--end-offset", "10"],
     "--start-offset 50 is after --end-offset 10: the range is empty"),
    (["--start", "2030-01-01", "--end", "2020-01-01"],
     "--start 2030-01-01 is after --end 2020-01-01: the range is empty"),
])
def test_an_inverted_range_is_one_line(cli, args, message):
    result = cli("--topic", "events.transactions", *args, "--out", "o")
    one_line_error(result.exception, message)


def test_an_inverted_time_range_of_the_api_is_refused():
    with pytest.raises(ConfigError, match=r"--start \(20 ms\) is after --end \(10 ms\)"):
        TopicRange("events.transactions", start_ms=20, end_ms=10)
    TopicRange("events.transactions", start_ms=10, end_ms=10)  # empty, not inverted


# 6. every row rejected: an error; an empty input: said so, an empty output

def bad_inputs(lab: dict[str, Any], root: Path) -> list[tuple[Path, int, str]]:
    import fastavro

    outcomes = lab["root"] / "score" / "outcomes.avro"  # the simulator's: another schema
    with open(outcomes, "rb") as fh:
        n_outcomes = sum(1 for _ in fastavro.reader(fh))
    only_a = root / "a.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), only_a)
    array = root / "array.json"
    array.write_text(json.dumps([dict(e) for e in lab["events"][:2]], indent=1))
    return [(outcomes, n_outcomes, f"decode: {outcomes}: record 0: field card_id is missing"),
            (only_a, 2, f"decode: {only_a}: record 0: field event_id is missing"),
            (array, len(array.read_text().splitlines()), f"decode: {array}: record 0: not JSON")]


def test_an_input_whose_every_row_is_rejected_fails(cli, lab, tmp_path):
    for path, n, first in bad_inputs(lab, tmp_path):
        result = cli("--input", str(path), "--out", f"{path.stem}-out")
        text = one_line_error(result.exception, f"all {n:,} rows of --input {path} were"
                              f" rejected (the first: {first}",
                              f"rejects -> {path.stem}-out.rejects.jsonl")
        assert result.exit_code != 0 and "ok" not in result.output, text
        again = cli("--input", str(path), "--out", f"{path.stem}-out")  # complete: the same
        assert str(again.exception) == text


def test_some_rows_rejected_is_still_ok(cli, lab, tmp_path):
    events = [{**e, "amount": -1.0} for e in lab["events"][:5]] + lab["events"][5:7]
    path = write_input(lab, "avro", events, name="mostly-bad")
    result = cli("--input", str(path), "--out", "o")
    assert result.exit_code == 0, result.output
    assert "rows in 7 = predictions 2 + rejects 5 (validate 5): ok" in result.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "avro", "parquet"])
def test_an_empty_input_says_so_and_writes_an_empty_output(cli, lab, spec, tmp_path, fmt):
    path = tmp_path / f"empty.{fmt}"
    if fmt == "avro":
        write_records(path, lab["codec"], [])
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(lab["events"][:1]).slice(0, 0), path)
    else:
        path.write_text("")
    for out in ("empty-out", "empty-out.avro"):
        result = cli("--input", str(path), "--out", out)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == (f"--input {path}: no rows to score (an empty"
                                                  " input); the output holds no predictions")
        assert rows_of(tmp_path / out) == []  # readable, with the schema
    assert pq.read_table(tmp_path / "empty-out").schema.names[:2] == ["prediction_id",
                                                                      "event_id"]


# 7. a truncated or corrupt Avro input

def test_a_truncated_avro_input_is_named_so_before_anything_is_written(lab, spec, tmp_path):
    whole = write_input(lab, "avro")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, cut, tmp_path / "o"))
    one_line_error(exc.value, f"--input {cut}: truncated or corrupt Avro file: unreadable"
                   " after")
    assert "not a avro" not in str(exc.value)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.rejects.jsonl").exists()
    for content, why in [(b"", "an empty file"), (data[:20], "a truncated or corrupt header"),
                         (b"PAR1 not avro", "no Avro magic bytes")]:
        bad = tmp_path / "bad.avro"
        bad.write_bytes(content)
        with pytest.raises(ConfigError) as exc:
            run_batch(request(lab, spec, bad, tmp_path / "o"))
        one_line_error(exc.value, f"--input {bad}: not an Avro container file ({why}")


def test_other_unreadable_files_name_the_input(lab, spec, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError) as exc:
        run_batch(request(lab, spec, bad, tmp_path / "o"))
    one_line_error(exc.value, f"--input {bad}: not a Parquet file")
