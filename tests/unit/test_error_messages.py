"""Errors name the setting or option that was actually wrong (issue 17).

Every case fails while the settings are read, before anything connects. Two run as a user
runs them (``python -m precog ...``, the line on stderr); the others through typer's runner,
the error turned into its line as ``precog.cli.main`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from precog.cli import app
from precog.errors import ConfigError, PrecogError
from precog.settings import Settings, get_settings, settings_with, validation_message

pytestmark = pytest.mark.unit
NS_RULE = "must be lowercase letters, digits, '-' or '_'"


def _precog(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRECOG_")}
    return subprocess.run([sys.executable, "-m", "precog", *args], capture_output=True,
                          text=True, env={**clean, **env}, timeout=120)


def _error_line(args: list[str], env: dict[str, str]) -> str:
    """The one line ``precog.cli.main`` prints for the command's error."""
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()
    exc = res.exception
    if isinstance(exc, ValidationError):
        return validation_message(exc)
    assert isinstance(exc, PrecogError), (res.output, exc)
    return str(exc)


@pytest.mark.parametrize(("env", "args", "line"), [
    ({"PRECOG_NAMESPACE": "Bad"}, ["setup"],
     f"invalid setting PRECOG_NAMESPACE='Bad': {NS_RULE}"),
    ({}, ["setup", "--namespace", "Bad"], f"bad --namespace 'Bad': {NS_RULE}"),
])
def test_the_command_prints_one_line_naming_the_source(env: dict[str, str], args: list[str],
                                                       line: str) -> None:
    res = _precog(*args, **env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"precog: error: {line}"]


@pytest.mark.parametrize(("args", "env", "line"), [
    # the option wins over the environment: a good option with a bad variable works
    (["setup", "-n", "Bad"], {"PRECOG_NAMESPACE": "good"}, f"bad --namespace 'Bad': {NS_RULE}"),
    (["report", "--namespace", "Bad"], {}, f"bad --namespace 'Bad': {NS_RULE}"),
    (["report"], {"PRECOG_NAMESPACE": "a.b"},
     f"invalid setting PRECOG_NAMESPACE='a.b': {NS_RULE}"),
    (["replay", "compare", "--left", "prod", "--right", "Par"], {},
     f"bad --right 'Par': {NS_RULE}"),
    (["kibana", "export", "--namespace", "Bad", "--out", os.devnull], {},
     f"bad --namespace 'Bad': {NS_RULE}"),
    (["setup", "-n", "t1"], {"PRECOG_KAFKA_PARTITIONS": "0"},
     "invalid setting PRECOG_KAFKA_PARTITIONS='0': Input should be greater than or equal to 1"),
    (["setup", "-n", "t1"], {"PRECOG_KAFKA_SECURITY_PROTOCOL": "TLS"},
     "invalid setting PRECOG_KAFKA_SECURITY_PROTOCOL='TLS': Input should be 'PLAINTEXT', "
     "'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    (["setup", "-n", "t1"], {"PRECOG_STACK_KAFKA_PORT": "19200"},
     "invalid setting PRECOG_STACK_*: the stack's ports must all differ, got [19200, 19093, "
     "19200, 19300, 16379, 18081]"),
])
def test_the_error_names_where_the_bad_value_came_from(args: list[str], env: dict[str, str],
                                                       line: str) -> None:
    assert _error_line(args, env) == line


def test_validation_message_names_the_option_only_for_fields_it_gave() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(namespace="ok", kafka={"partitions": 0})
    # --namespace was given, but the bad value is the partitions: the variable is named
    assert validation_message(info.value, {"namespace": "--namespace"}) == (
        "invalid setting PRECOG_KAFKA_PARTITIONS=0: Input should be greater than or equal to 1")


def test_a_secret_value_is_never_shown() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(elasticsearch={"password": 12})
    message = validation_message(info.value)
    assert message.startswith("invalid setting PRECOG_ELASTICSEARCH_PASSWORD: ")
    assert "12" not in message


def test_settings_with_ignores_options_not_given() -> None:
    assert settings_with(namespace=("--namespace", None)).namespace == Settings().namespace
    with pytest.raises(ConfigError, match=r"^bad --namespace 'A': must be lowercase"):
        settings_with(namespace=("--namespace", "A"))


def test_a_command_prints_no_dependency_warning_at_start() -> None:
    # confluent-kafka's Schema Registry client imports Authlib's httpx integration, which
    # warned "The httpx module is deprecated" on every command (precog/__init__.py)
    proc = subprocess.run([sys.executable, "-W", "default", "-c",
                           "import precog, confluent_kafka.schema_registry"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_a_path_that_cannot_be_written_is_one_line_naming_it(tmp_path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    out = a_file / "x.ndjson"  # under a file: its directory cannot be made
    res = _precog("kibana", "export", "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"precog: error: {a_file}: File exists"]


def test_a_corrupt_registry_file_is_named_not_blamed_on_a_setting(tmp_path) -> None:
    version = tmp_path / "registry" / "fraud-lgbm" / "1"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text("{broken\n")
    res = _precog("models", "list", PRECOG_REGISTRY_DIR=str(tmp_path / "registry"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"precog: error: {version / 'metadata.json'}: not valid JSON (Expecting property name"
        " enclosed in double quotes: line 1 column 2 (char 1))"]


def test_only_the_settings_model_is_named_as_a_setting() -> None:
    from precog.registry import ModelMetadata
    from precog.settings import ServeSettings

    with pytest.raises(ValidationError) as info:
        ModelMetadata.model_validate_json("{broken\n")
    assert validation_message(info.value) == (
        "invalid ModelMetadata: Invalid JSON: key must be a string at line 1 column 2")
    with pytest.raises(ValidationError) as info:
        ModelMetadata.model_validate({"model_id": "m"})
    assert validation_message(info.value) == "invalid ModelMetadata version: Field required"
    # a section validated on its own is still named by its full variable
    with pytest.raises(ValidationError) as info:
        ServeSettings.model_validate({"port": -1})
    assert validation_message(info.value) == (
        "invalid setting PRECOG_SERVE_PORT=-1: Input should be greater than or equal to 1")
    assert validation_message(info.value, {"port": "--port"}) == (
        "bad --port -1: Input should be greater than or equal to 1")


def test_a_check_across_fields_has_no_pydantic_link() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(stack={"kafka_port": 19200})
    message = validation_message(info.value)
    assert "errors.pydantic.dev" not in message and "\n" not in message


def test_a_spec_check_across_fields_is_its_message_alone(tmp_path) -> None:
    import yaml

    from precog.spec import SPEC_DIR, load_spec

    spec = yaml.safe_load((SPEC_DIR / "transactions.yaml").read_text())
    for model in spec["models"]:
        model["role"] = "leader"
    path = tmp_path / "two-leaders.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == (f"{path}: invalid pipeline spec: exactly one model must have"
                              " role: leader")
