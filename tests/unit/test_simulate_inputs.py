"""`precog simulate history` refuses bad options in one line, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from precog.cli import app
from precog.errors import ConfigError
from precog.simulate import SimConfig, write_history

pytestmark = pytest.mark.unit
END = 1_750_000_000_000


def _refused(out: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["simulate", "history", "--out", str(out), "--no-progress",
                                      *args])
    assert isinstance(result.exception, ConfigError), result.output
    return str(result.exception)


@pytest.mark.parametrize(("args", "line"), [
    (("--days", "inf"), "--days inf: a history spans 0.01 to 3650 days"),
    (("--days", "nan"), "--days nan: a history spans 0.01 to 3650 days"),
    (("--days", "1e300"), "--days 1e+300: a history spans 0.01 to 3650 days"),
    (("--days", "0"), "--days 0.0: a history spans 0.01 to 3650 days"),
    (("--end", "99999999999999999999"), "--end 99999999999999999999: give a time from"
     " 1970-01-01 to 9999-12-31 (epoch ms 0 to 253402300799999)"),
    (("--end", "1969-12-31T23:59:59"), "--end -1000: give a time from 1970-01-01 to 9999-12-31"
     " (epoch ms 0 to 253402300799999)"),
    (("--events", "99999999999999999999999"),
     "--events 99999999999999999999999: a history holds 1 to 10,000,000 events"),
    (("--entities", "99999999999999999999"),
     "--entities 99999999999999999999: a world holds at most 1,000,000 entities"),
    (("--positive-rate", "0"), "positive rate (--positive-rate) must be in (0, 0.5), got 0.0"),
])
def test_out_of_range_options_are_one_line_and_write_nothing(tmp_path: Path, args: tuple,
                                                             line: str) -> None:
    assert _refused(tmp_path / "h", "--events", "10", *args) == line
    assert not (tmp_path / "h").exists()


def test_positive_rate_help_gives_the_range_the_check_takes() -> None:
    res = CliRunner().invoke(app, ["simulate", "history", "--help"])
    text = " ".join(res.output.replace("│", " ").split())  # the help as words, unwrapped
    assert "--positive-rate <float> share of events labelled 1, in (0, 0.5) [default: 0.02]" in text
    assert "x>=0" not in text


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert _refused(tmp_path / "f", "--events", "10") == f"--out {tmp_path / 'f'}: not a directory"
    assert _refused(tmp_path / "f" / "h", "--events", "10") == (
        f"--out {tmp_path / 'f' / 'h'}: cannot create the directory: Not a directory")


def test_an_existing_history_is_replaced_only_with_force(tmp_path: Path) -> None:
    write_history(tmp_path, 50, seed=1, end_ms=END, progress=False, config=SimConfig(entities=5))
    before = (tmp_path / "events.avro").read_bytes()
    assert _refused(tmp_path, "--events", "60", "--end", str(END)) == (
        f"--out {tmp_path}: already holds a history (events.avro, outcomes.avro, manifest.json);"
        " give --force to replace it")
    assert (tmp_path / "events.avro").read_bytes() == before
    res = CliRunner().invoke(app, ["simulate", "history", "--out", str(tmp_path), "--events",
                                   "60", "--end", str(END), "--no-progress", "--force"])
    assert res.exit_code == 0, res.output
    assert "wrote 60 events" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.avro", "manifest.json",
                                                          "outcomes.avro"]


def test_the_library_checks_the_same_bounds() -> None:
    with pytest.raises(ConfigError, match=r"^--days inf: a history spans"):
        write_history("/nonexistent/never", 10, seed=1, end_ms=END, progress=False,
                      days=float("inf"))
    with pytest.raises(ConfigError, match=r"^--entities 2000000: a world holds at most"):
        SimConfig(entities=2_000_000)
