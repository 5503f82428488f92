"""Bad input to ``replay run``, ``report``, ``kibana`` and ``--spec`` is one line naming what
was wrong, before anything connects; a replay of an empty range creates nothing.

Commands run through typer's runner; the error is the exception ``precog.cli.main`` turns
into ``precog: error: <line>`` (exit 2).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from precog.cli import app
from precog.cli import kibana as _kibana
from precog.errors import ConfigError, PrecogError
from precog.replay.checkpoint import Checkpoint
from precog.replay.plan import PartitionRange
from precog.replay.request import ReplayRequest
from precog.replay.runner import job as replay_job
from precog.replay.runner import run as replay_run
from precog.settings import Settings, get_settings
from precog.spec import SPEC_DIR, load_spec

pytestmark = pytest.mark.unit
SPEC = SPEC_DIR / "transactions.yaml"
TOPIC = "events.transactions"
# nothing answers here: a test that reached Kafka, Elasticsearch or Kibana would fail
NOWHERE = {"PRECOG_SPEC": str(SPEC), "PRECOG_KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "PRECOG_ELASTICSEARCH_URL": "http://127.0.0.1:1", "PRECOG_NAMESPACE": "demo"}
BINARY = b"\x00\xff\xfe\x89PNG binary"


def _error(args: list[str], env: dict[str, str] | None = None) -> str:
    """The one line ``precog.cli.main`` prints for the command's error."""
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, args, env={**NOWHERE, **(env or {})})
    finally:
        get_settings.cache_clear()
    assert isinstance(res.exception, PrecogError), (res.output, res.exception)
    return str(res.exception)


def _run(*extra: str, to: str = "tpar") -> list[str]:
    return ["replay", "run", "--from-namespace", "demo", "--to-namespace", to, *extra]


# --------------------------------------------------------------------------- 1: prod, empty


def test_replaying_into_prod_needs_force():
    demo, prod = Settings(namespace="demo"), Settings(namespace="prod")
    spec = load_spec(SPEC)
    assert _error(_run(to="prod")) == "refusing to replay into namespace 'prod' without --force"
    with pytest.raises(ConfigError, match="without --force"):
        ReplayRequest(demo, prod, spec)
    assert ReplayRequest(demo, prod, spec, force=True).target.namespace == "prod"
    assert _error(["replay", "copy-roles", "--from-namespace", "demo", "--to-namespace",
                   "prod"]) == "refusing to rewrite the roles of namespace 'prod' without --force"


def test_an_empty_range_creates_no_topic_and_no_checkpoint(tmp_path, monkeypatch):
    src = f"demo.{TOPIC}"
    empty = replay_job.Job({(src, 0): PartitionRange(0, 9, 9), (src, 1): PartitionRange(1, 4, 4)},
                           {src: f"tpar.{TOPIC}"}, src)
    monkeypatch.setattr(replay_run, "plan", lambda _request: empty)
    created: list[str] = []
    monkeypatch.setattr("precog.namespace.ensure_topics",
                        lambda settings, _spec, **_kw: created.append(settings.namespace))
    said: list[str] = []
    request = ReplayRequest(Settings(namespace="demo"), Settings(namespace="tpar"),
                            load_spec(SPEC), start_offsets="999999999",
                            end_offsets="999999999", checkpoint_dir=tmp_path, progress=False)
    summary = replay_run.replay(request, echo=said.append)
    assert created == [] and not request.checkpoint_path.exists()
    assert (summary.empty, summary.planned, summary.sent) == (True, 0, 0)
    assert said == [f"nothing to replay: the range of {src} is empty; no topics created in "
                    "tpar, no checkpoint written"]


# --------------------------------------------------------------------------- 2: checkpoints


@pytest.mark.parametrize(("content", "reason"), [
    (b"[]", "not a JSON object but a list"),
    (b'"x"', "not a JSON object but a str"),
    (b'{"version": 1, "from_namespace": "a", "to_namespace": "b", "topic": "t",'
     b' "ranges": [], "target_start": {}}', "ranges is not an object of objects"),
    (BINARY, "not UTF-8 text"),
])
def test_a_checkpoint_that_is_not_one_is_a_clean_error(tmp_path, content, reason):
    path = tmp_path / "tpar" / f"{TOPIC}.json"
    path.parent.mkdir()
    path.write_bytes(content)
    assert _error(_run("--checkpoint-dir", str(tmp_path))) == (
        f"{path}: unreadable replay checkpoint ({reason}); use --restart")


def test_a_checkpoint_dir_that_cannot_be_one_names_the_option(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _error(_run("--checkpoint-dir", str(afile))) == (
        f"--checkpoint-dir: {afile} exists and is not a directory")
    assert _error(_run("--checkpoint-dir", str(afile / "sub"))) == (
        f"--checkpoint-dir: {afile} exists and is not a directory")
    with pytest.raises(ConfigError, match=r"^--checkpoint-dir: cannot create /proc/nope/tpar: "):
        replay_job.prepare_checkpoint_dir(Path("/proc/nope/tpar/x.json"))


# --------------------------------------------------------------------------- 3: resume options


@pytest.mark.parametrize(("args", "line"), [
    (["--start-offset", "x"], "bad --start-offset 'x': use N or PARTITION:OFFSET,..."),
    (["--end-offset", "0:1,1"], "bad --end-offset '0:1,1': use N or PARTITION:OFFSET,..."),
    (["--pace", "quick"], "bad pace 'quick': use max, realtime or Nx (e.g. 10x)"),
])
def test_bad_options_are_refused_even_with_a_checkpoint(tmp_path, args, line):
    _write_checkpoint(tmp_path, {"--start-offset": "0"})
    assert _error(_run("--checkpoint-dir", str(tmp_path), *args)) == line


def _options(**given: Any) -> dict[str, Any]:
    return {"--start": None, "--end": None, "--start-offset": None, "--end-offset": None,
            "--warmup-start": None, "--with-outcomes": False, **given}


def _write_checkpoint(tmp_path: Path, given: dict[str, Any]) -> Path:
    path = tmp_path / "tpar" / f"{TOPIC}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(Checkpoint("demo", "tpar", TOPIC, {f"demo.{TOPIC}": {"0": [0, 5]}},
                               {f"demo.{TOPIC}": {"0": 0}}, options=_options(**given)).to_json())
    return path


def test_a_resume_with_other_range_options_is_refused(tmp_path):
    path = _write_checkpoint(tmp_path, {"--start-offset": "0", "--end-offset": "0:5"})
    assert _error(_run("--checkpoint-dir", str(tmp_path), "--start-offset", "1")) == (
        f"{path} is from a replay with other options (it differs in --end-offset, "
        "--start-offset): repeat them to resume, or --restart starts over")
    assert _error(_run("--checkpoint-dir", str(tmp_path), "--start-offset", "0",
                       "--end-offset", "0:5", "--with-outcomes")).endswith(
        "(it differs in --with-outcomes): repeat them to resume, or --restart starts over")


def test_a_resume_with_the_same_range_may_change_the_pace(tmp_path):
    path = _write_checkpoint(tmp_path, {"--start-offset": "0", "--end-offset": "0:5"})
    ckpt = replay_job.load_checkpoint(path)
    request = ReplayRequest(Settings(namespace="demo"), Settings(namespace="tpar"),
                            load_spec(SPEC), start_offsets=" 0", end_offsets="0: 5", pace=10.0,
                            checkpoint_dir=tmp_path)
    replay_job.check_resumable(ckpt, request, path)  # no error
    old = Checkpoint.from_json(json.dumps({**json.loads(ckpt.to_json()), "options": None}))
    replay_job.check_resumable(old, request, path)  # written before options were kept


# --------------------------------------------------------------------------- 7: timeouts


class _Stop(Exception):
    pass


def test_a_replay_asks_kafka_with_its_10_s_timeout_not_setups_30_s(tmp_path, monkeypatch):
    """The target's topics are ensured with the replay's timeout (was 30 s: ~31 s before the
    one line when Kafka is unreachable, against ~11 s for every other command)."""
    _write_checkpoint(tmp_path, {})
    seen: dict[str, Any] = {}

    def ensure_topics(_settings: Settings, _spec: Any, **kw: Any) -> None:
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr("precog.namespace.ensure_topics", ensure_topics)
    request = ReplayRequest(Settings(namespace="demo"), Settings(namespace="tpar"),
                            load_spec(SPEC), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(_Stop):
        replay_run.replay(request, echo=lambda _m: None)
    assert seen == {"timeout": 10.0}


# --------------------------------------------------------------------------- 4: report


def test_report_refuses_an_empty_time_range():
    assert _error(["report", "--since", "2030-01-01", "--until", "2020-01-01"]) == (
        "--since 2030-01-01 is not before --until 2020-01-01: the time range is empty")
    assert _error(["report", "--since", "1000", "--until", "1000"]).startswith(
        "--since 1000 is not before --until 1000")


def test_report_out_that_cannot_be_a_directory_names_the_option(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _error(["report", "--out", str(afile)]) == (
        f"--out {afile}: exists and is not a directory")
    assert _error(["report", "--out", str(afile / "sub")]) == (
        f"--out {afile / 'sub'}: cannot create the directory: Not a directory")


# --------------------------------------------------------------------------- 5: kibana


def test_kibana_export_out_that_cannot_be_written_names_the_option(tmp_path):
    assert _error(["kibana", "export", "--out", str(tmp_path)]) == (
        f"--out {tmp_path}: is a directory; give a file name (e.g. "
        f"{tmp_path / 'saved_objects.ndjson'})")
    # a path that cannot be made stays main's OSError line (test_error_messages.py)
    with pytest.raises(FileNotFoundError) as err:
        _kibana.export_cmd(out=Path("/proc/nope/x.ndjson"), spec=SPEC)
    assert err.value.filename == "/proc/nope"


def test_kibana_check_of_a_binary_file_or_a_directory_is_one_line(tmp_path):
    binary = tmp_path / "x.ndjson"
    binary.write_bytes(BINARY)
    assert _error(["kibana", "check", str(binary)]) == (
        f"{binary}: not UTF-8 text (byte 1: invalid start byte)")
    assert _error(["kibana", "check", str(tmp_path)]) == (
        f"{tmp_path}: is a directory, not a file")


@pytest.mark.parametrize(("args", "env", "line"), [
    (["--url", "notaurl"], {},
     "bad --url 'notaurl': use http://HOST[:PORT] or https://HOST[:PORT]"),
    (["--url", "ftp://kb:21"], {},
     "bad --url 'ftp://kb:21': use http://HOST[:PORT] or https://HOST[:PORT]"),
    (["--url", "http://kb:99999"], {},
     "bad --url 'http://kb:99999': use http://HOST[:PORT] or https://HOST[:PORT]"),
    ([], {"PRECOG_KIBANA_URL": "https://u:secret@/x"},
     "bad PRECOG_KIBANA_URL 'https:///x': use http://HOST[:PORT] or https://HOST[:PORT]"),
])
def test_kibana_import_refuses_a_bad_url_before_any_request(args, env, line):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # urllib3's FutureWarning would fail the test
        assert _error(["kibana", "import", *args], env) == line


# --------------------------------------------------------------------------- 6: --spec


def test_a_spec_that_is_binary_or_a_directory_is_one_line(tmp_path):
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(BINARY)
    with pytest.raises(ConfigError) as err:
        load_spec(binary)
    assert str(err.value) == f"pipeline spec {binary}: not UTF-8 text (byte 1: invalid start byte)"
    with pytest.raises(ConfigError) as err:
        load_spec(tmp_path)
    assert str(err.value) == f"pipeline spec {tmp_path}: is a directory, not a YAML file"
    assert _error(_run("--spec", str(tmp_path))) == str(err.value)
    assert _error(["kibana", "export", "--out", str(tmp_path / "o.ndjson")],
                  {"PRECOG_SPEC": str(binary)}).endswith(": not UTF-8 text (byte 1: invalid "
                                                         "start byte)")
