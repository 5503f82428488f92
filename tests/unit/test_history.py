"""The history format: simulator files, files with the .avsc's logical types, CSV, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fastavro
import pytest
from precog.pipelines.train import labeled_frame
from typer.testing import CliRunner

from precog import resources
from precog.cli import app
from precog.errors import ConfigError
from precog.history import check_history, read_history
from precog.simulate import SimConfig, write_history
from precog.spec import load_spec

pytestmark = pytest.mark.unit
SPEC_PATH = resources.spec_dir() / "transactions.yaml"
SPEC = load_spec(SPEC_PATH)
END = 1_750_000_000_000


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good")
    write_history(out, 400, seed=5, end_ms=END, progress=False, config=SimConfig(entities=40))
    return out


def _rewrite(src: Path, dst: Path, name: str, schema: dict, edit=lambda r: r) -> None:
    dst.mkdir(exist_ok=True)
    with open(src / name, "rb") as f:
        records = [edit(r) for r in fastavro.reader(f)]
    with open(dst / name, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), records)


def _avsc(name: str) -> dict:
    return json.loads((resources.schema_dir() / f"{name}.v1.avsc").read_text())


def test_simulator_history_checks(good: Path) -> None:
    check = check_history(good, SPEC)
    events, outcomes = read_history(good, SPEC)
    assert (check.events, check.outcomes) == (400, len(outcomes))
    assert check.positives == sum(o["label"] for o in outcomes)
    assert check.first_event_time == min(e["event_time"] for e in events)


def test_logical_timestamp_millis_reads_as_epoch_ms_and_trains(good: Path, tmp_path: Path
                                                               ) -> None:
    _rewrite(good, tmp_path, "events.avro", _avsc("transaction"))
    _rewrite(good, tmp_path, "outcomes.avro", _avsc("outcome"))
    with open(tmp_path / "events.avro", "rb") as f:  # fastavro gives datetimes here
        assert type(next(fastavro.reader(f))["event_time"]).__name__ == "datetime"
    assert read_history(tmp_path, SPEC) == read_history(good, SPEC)
    plain, logical = labeled_frame(SPEC, good), labeled_frame(SPEC, tmp_path)
    assert (logical.X == plain.X).all() and list(logical.y) == list(plain.y)


def test_bad_files_are_one_line_naming_file_record_and_field(good: Path, tmp_path: Path
                                                             ) -> None:
    shutil.copy(good / "outcomes.avro", tmp_path / "outcomes.avro")
    (tmp_path / "events.avro").write_bytes(b"not avro at all")
    with pytest.raises(ConfigError, match=r"events.avro: not an Avro container file"):
        check_history(tmp_path, SPEC)

    no_customer = _avsc("transaction")
    no_customer["fields"] = [f for f in no_customer["fields"] if f["name"] != "customer_id"]
    _rewrite(good, tmp_path, "events.avro", no_customer,
             lambda r: {k: v for k, v in r.items() if k != "customer_id"})
    with pytest.raises(ConfigError) as err:
        check_history(tmp_path, SPEC)
    assert str(err.value) == f"{tmp_path / 'events.avro'}: record 0: field customer_id is missing"

    as_text = _avsc("transaction")
    as_text["fields"] = [{**f, "type": "string"} if f["name"] == "amount" else f
                         for f in as_text["fields"]]
    _rewrite(good, tmp_path, "events.avro", as_text, lambda r: {**r, "amount": "12 EUR"})
    with pytest.raises(ConfigError, match=r"record 0: field amount: '12 EUR' is not double$"):
        check_history(tmp_path, SPEC)

    resent = {"n": 0}

    def second_copy(r: dict) -> dict:  # record 3 again in place of record 7
        resent["n"] += 1
        return first[3] if resent["n"] == 8 else r
    with open(good / "events.avro", "rb") as f:
        first = list(fastavro.reader(f))
    _rewrite(good, tmp_path, "events.avro", _avsc("transaction"), second_copy)
    with pytest.raises(ConfigError) as err:
        check_history(tmp_path, SPEC)
    assert str(err.value) == (f"{tmp_path / 'events.avro'}: event id {first[3]['event_id']!r}"
                              " appears twice (records 3 and 7): a history holds each event once")

    shutil.copy(good / "events.avro", tmp_path / "events.avro")
    outcome = _avsc("outcome")
    _rewrite(good, tmp_path, "outcomes.avro", outcome, lambda r: {**r, "label": 2})
    with pytest.raises(ConfigError, match=r"outcomes.avro: record 0: field label: 2 is not 0 or 1"):
        check_history(tmp_path, SPEC)

    (tmp_path / "outcomes.avro").unlink()
    with pytest.raises(ConfigError, match=r"outcomes.avro is missing"):
        labeled_frame(SPEC, tmp_path)


def test_cli_writes_a_history_from_csv_and_checks_it(good: Path, tmp_path: Path) -> None:
    events, outcomes = read_history(good, SPEC)
    # 20 outcomes with both labels (`history check` refuses what training refuses), 30 events
    known = [next(o for o in outcomes if o["label"]), *[o for o in outcomes if not o["label"]][:19]]
    ids = {o["event_id"] for o in known}
    some = [e for e in events if e["event_id"] in ids] + [
        e for e in events if e["event_id"] not in ids][:10]
    header = list(events[0])
    rows = [",".join(str(e[k]) for k in header) for e in some]
    (tmp_path / "ev.csv").write_text("\n".join([",".join(header), *rows]) + "\n")
    out_header = list(outcomes[0])
    rows = [",".join(str(o[k]) for k in out_header) for o in known]
    (tmp_path / "out.csv").write_text("\n".join([",".join(out_header), *rows]) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["history", "write", "--from", str(tmp_path / "ev.csv"),
                              "--outcomes", str(tmp_path / "out.csv"), "--out",
                              str(tmp_path / "h"), "--spec", str(SPEC_PATH)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote 30 events and 20 outcomes to {tmp_path / 'h'}"
    assert read_history(tmp_path / "h", SPEC) == (some, known)
    res = runner.invoke(app, ["history", "check", str(tmp_path / "h"), "--spec", str(SPEC_PATH)])
    assert res.exit_code == 0 and res.output.startswith(
        f"{tmp_path / 'h'}: ok, 30 events, 20 outcomes (1 positive)")

    (tmp_path / "bad.csv").write_text("event_id,card_id,amount\ne1,card-1,abc\n")
    res = runner.invoke(app, ["history", "check", str(tmp_path / "bad.csv"),
                              "--spec", str(SPEC_PATH)])
    assert isinstance(res.exception, ConfigError)
    assert str(res.exception) == f"{tmp_path / 'bad.csv'}: record 0: field customer_id is missing"


def test_csv_times_may_be_iso(tmp_path: Path) -> None:
    from precog.avro import Codec
    from precog.history import read_csv

    (tmp_path / "o.csv").write_text("event_id,label,event_time,outcome_time\n"
                                    "e1,1,2025-06-15T00:00:00Z,1750000000001\n")
    [rec] = read_csv(tmp_path / "o.csv", Codec.for_schema("outcome"))
    assert rec == {"event_id": "e1", "label": 1, "event_time": 1_749_945_600_000,
                   "outcome_time": 1_750_000_000_001, "source": "chargebacks"}
