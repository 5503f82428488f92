"""What `precog history`, `train` and `backfill` say about bad paths and histories they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from precog.pipelines.backfill import backfill
from precog.pipelines.train import train
from typer.testing import CliRunner

from precog import resources
from precog.avro import Codec
from precog.cli import app
from precog.errors import ConfigError
from precog.history import (
    EVENTS_FILE,
    OUTCOMES_FILE,
    check_history,
    read_history,
    write_records,
)
from precog.settings import Settings
from precog.simulate import SimConfig, write_history
from precog.spec import load_spec

pytestmark = pytest.mark.unit
SPEC_PATH = resources.spec_dir() / "transactions.yaml"
SPEC = load_spec(SPEC_PATH)
END = 1_750_000_000_000
#: services nobody answers at: a test that reached them would fail, not hang
NOWHERE_ENV = {"PRECOG_ELASTICSEARCH_URL": "http://127.0.0.1:9",
               "PRECOG_REDIS_URL": "redis://127.0.0.1:9/0", "PRECOG_KAFKA_BOOTSTRAP": "127.0.0.1:9",
               "PRECOG_NAMESPACE": "test-history-cli-inputs"}
NOWHERE = Settings(elasticsearch={"url": "http://127.0.0.1:9"},
                   redis={"url": "redis://127.0.0.1:9/0"}, kafka={"bootstrap": "127.0.0.1:9"},
                   namespace="test-history-cli-inputs")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good")
    write_history(out, 300, seed=5, end_ms=END, progress=False, config=SimConfig(entities=30))
    return out


def _invoke(*args: str) -> ConfigError:
    result = CliRunner().invoke(app, [*args, "--spec", str(SPEC_PATH)], env=NOWHERE_ENV)
    assert isinstance(result.exception, ConfigError), result.output
    return result.exception


def test_write_refuses_an_existing_history_and_replaces_it_whole_with_force(good: Path,
                                                                             tmp_path: Path
                                                                             ) -> None:
    h = tmp_path / "h"
    write_history(h, 300, seed=5, end_ms=END, progress=False, config=SimConfig(entities=30))
    before = {n: (h / n).read_bytes() for n in (EVENTS_FILE, OUTCOMES_FILE, "manifest.json")}
    err = _invoke("history", "write", "--from", str(good / EVENTS_FILE), "--out", str(h))
    assert str(err) == (f"--out {h}: already holds a history (events.avro, outcomes.avro,"
                        " manifest.json); give --force to replace it")
    assert {n: (h / n).read_bytes() for n in before} == before

    res = CliRunner().invoke(app, ["history", "write", "--from", str(good / EVENTS_FILE),
                                   "--out", str(h), "--force", "--spec", str(SPEC_PATH)])
    assert res.exit_code == 0, res.output
    # the simulator's manifest described the files replaced: gone; no temporary file left
    assert sorted(p.name for p in h.iterdir()) == [EVENTS_FILE, OUTCOMES_FILE]


def test_write_out_that_is_a_file_or_cannot_be_made_is_one_line(good: Path, tmp_path: Path
                                                                ) -> None:
    (tmp_path / "f").write_text("x")
    err = _invoke("history", "write", "--from", str(good / EVENTS_FILE),
                  "--out", str(tmp_path / "f"))
    assert str(err) == f"--out {tmp_path / 'f'}: not a directory"
    err = _invoke("history", "write", "--from", str(good / EVENTS_FILE),
                  "--out", str(tmp_path / "f" / "h"))
    assert str(err) == f"--out {tmp_path / 'f' / 'h'}: cannot create the directory: Not a directory"


def test_write_refuses_empty_inputs_and_writes_nothing(good: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    err = _invoke("history", "write", "--from", str(tmp_path / "empty.csv"),
                  "--out", str(tmp_path / "h"))
    assert str(err) == f"--from {tmp_path / 'empty.csv'}: no events in it"
    err = _invoke("history", "write", "--from", str(good / EVENTS_FILE), "--outcomes",
                  str(tmp_path / "empty.csv"), "--out", str(tmp_path / "h"))
    assert str(err) == (f"--outcomes {tmp_path / 'empty.csv'}: no outcomes in it (leave"
                        " --outcomes out when none are known yet)")
    assert not (tmp_path / "h").exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    from precog.history import writing_history

    out = tmp_path / "h"
    with pytest.raises(RuntimeError), writing_history(out) as part:
        part(EVENTS_FILE).write_bytes(b"half")
        raise RuntimeError("disk full")
    assert not out.exists()


def _history(root: Path, name: str, events: list, outcomes: list) -> Path:
    d = root / name
    d.mkdir()
    write_records(d / EVENTS_FILE, Codec.for_schema(SPEC.event.schema_name), events)
    write_records(d / OUTCOMES_FILE, Codec.for_schema(SPEC.outcome.schema_name), outcomes)
    return d


def test_check_refuses_what_train_refuses_with_the_same_line(good: Path, tmp_path: Path
                                                              ) -> None:
    events, outcomes = read_history(good, SPEC)
    cases = {
        "empty": ([], [], "no events to train on"),
        "unknown": (events, [], "none of its 300 events has an outcome: no labelled events"
                                " to train on"),
        "negative": (events, [{**o, "label": 0} for o in outcomes],
                     f"every labelled event ({len(outcomes)}) has label 0: training needs"
                     " both labels, 0 and 1"),
    }
    for name, (evs, outs, why) in cases.items():
        d = _history(tmp_path, name, evs, outs)
        with pytest.raises(ConfigError) as checked:
            check_history(d, SPEC)
        with pytest.raises(ConfigError) as trained:
            train(NOWHERE, SPEC, d, index=False, roles=False)
        assert str(checked.value) == str(trained.value) == f"{d}: {why}"
        assert str(_invoke("history", "check", str(d))) == f"{d}: {why}"


def test_check_help_says_the_exit_status_it_has() -> None:
    res = CliRunner().invoke(app, ["history", "check", "--help"])
    text = " ".join(res.output.replace("│", " ").split())  # the help as words, unwrapped
    assert ("Read a history as `precog train` does; exit 2 with one line naming what is"
            " wrong.") in text
    assert "exit 1" not in text


def test_a_history_path_that_is_a_file_or_missing_is_named_before_any_service(
        tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    not_dir = (f"{tmp_path / 'f'}: not a directory (a history is a directory with events.avro"
               " and outcomes.avro)")
    with pytest.raises(ConfigError) as err:
        backfill(NOWHERE, SPEC, tmp_path / "f")
    assert str(err.value) == not_dir
    with pytest.raises(ConfigError) as err:  # ES and Kafka at NOWHERE: no service asked
        train(NOWHERE, SPEC, tmp_path / "nope")
    assert str(err.value) == f"history directory not found: {tmp_path / 'nope'}"
    err2 = _invoke("train", "--history", str(tmp_path / "nope"))
    assert str(err2) == f"history directory not found: {tmp_path / 'nope'}"
