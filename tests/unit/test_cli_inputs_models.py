"""Command-line input checks of models, retrain, setup, worker, serve and stack: a wrong,
conflicting or unused option is one line before anything connects, starts or publishes.

Kafka, the worker and the server are replaced by stand-ins that fail the test when reached,
so every case is fast and needs no service.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from precog.cli import app
from precog.errors import ConfigError, ModelError, PrecogError, ServiceUnavailable
from precog.models import dump_lightgbm
from precog.registry import HoldoutMetrics, ModelRegistry
from precog.roles import ModelRef, canary, initial_roles, set_traffic
from precog.settings import Settings, get_settings, validation_message
from precog.spec import load_spec

pytestmark = pytest.mark.unit

SPEC = load_spec(Settings().spec)
FEATURES = SPEC.feature_names[:3]
LGBM1, LGBM2, LOGREG = ModelRef("fraud-lgbm", 1), ModelRef("fraud-lgbm", 2), \
    ModelRef("fraud-logreg", 1)


def _fail(what: str) -> Any:
    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{what} was reached")
    return reached


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args, env=env or {})
    finally:
        get_settings.cache_clear()


def _error(args: list[str], env: dict[str, str] | None = None) -> str:
    """The line ``precog.cli.main`` prints for the command's error (without its prefix)."""
    res = _invoke(args, env)
    exc = res.exception
    if isinstance(exc, ValidationError):
        return validation_message(exc)
    assert isinstance(exc, PrecogError), (res.output, exc)
    return str(exc)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """fraud-lgbm v1, v2 and fraud-logreg v1 for the transactions spec, in PRECOG_REGISTRY_DIR."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, len(FEATURES)))
    y = (X[:, 0] > 0.3).astype(np.int64)
    booster = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": 1,
                         "num_threads": 1}, lgb.Dataset(X, y, feature_name=FEATURES),
                        num_boost_round=3)
    fields = dict(spec=SPEC.name, features=FEATURES, threshold=0.5, training_window_start=1,
                  training_window_end=2, training_rows=200, training_data_sha256="d" * 64,
                  holdout_start=3, holdout_end=4, holdout_rows=10, code_version="abc",
                  holdout=HoldoutMetrics(precision=0.5, recall=0.5, f1=0.5, roc_auc=0.8,
                                         log_loss=0.3, positive_rate=0.1))
    reg = ModelRegistry(tmp_path / "registry")
    for model_id in ("fraud-lgbm", "fraud-lgbm", "fraud-logreg"):
        reg.register(model_id, "lightgbm", dump_lightgbm(booster), **fields)
    monkeypatch.setenv("PRECOG_REGISTRY_DIR", str(reg.root))
    return reg


class Control:
    """A stand-in model-control topic: the roles it holds and the roles published to it."""

    def __init__(self) -> None:
        self.roles = initial_roles(SPEC.name, LGBM1, [LOGREG], at=1, by="t")
        self.published: list[Any] = []


@pytest.fixture
def control(monkeypatch: pytest.MonkeyPatch) -> Control:
    """Roles leader LGBM1, challenger LOGREG; publishing is recorded, nothing is sent."""
    from precog.services import model_control

    topic = Control()
    monkeypatch.setattr(model_control, "read_roles", lambda settings, name: topic.roles)
    monkeypatch.setattr(model_control, "publish_roles",
                        lambda settings, roles: topic.published.append(roles))
    return topic


# ----------------------------------------------------------------------- models list (2)


def test_models_list_with_kafka_unreachable_is_the_kafka_error_not_an_empty_role_column(
        registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    from precog.services import model_control

    def down(settings: Settings, name: str) -> None:
        raise ServiceUnavailable("kafka", "127.0.0.1:1", "timed out reading model-control")

    monkeypatch.setattr(model_control, "read_roles", down)
    res = _invoke(["models", "list"])
    assert isinstance(res.exception, ServiceUnavailable), res.output
    assert str(res.exception) == ("kafka is not reachable at 127.0.0.1:1: timed out reading"
                                  " model-control")
    assert "no roles published" not in res.output


def test_models_list_without_the_control_topic_still_lists_the_registry(
        registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    from precog.services import model_control

    def missing(settings: Settings, name: str) -> None:
        raise ConfigError("topic prod.model-control does not exist: run `precog setup` first")

    monkeypatch.setattr(model_control, "read_roles", missing)
    res = _invoke(["models", "list"])
    assert res.exit_code == 0, res.output
    assert "fraud-logreg" in res.output and "transactions: no roles published" in res.output


def test_models_list_and_show_name_a_corrupt_metadata_file(registry: ModelRegistry) -> None:
    path = registry.root / "fraud-lgbm" / "1" / "metadata.json"
    path.write_text("{broken\n")
    line = (f"{path}: not valid JSON (Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1))")
    assert _error(["models", "list"]) == line  # the registry is read before Kafka
    assert _error(["models", "show", "fraud-lgbm", "--version", "1"]) == line
    res = _invoke(["models", "show", "fraud-lgbm", "--version", "1"])
    assert isinstance(res.exception, ModelError)


# ----------------------------------------------------------------- models set-leader (6)


def test_set_leader_on_the_leader_says_so_before_loading_anything(
        registry: ModelRegistry, control: Control, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelRegistry, "load", _fail("loading the model"))
    assert _error(["models", "set-leader", "fraud-lgbm", "1"]) == (
        "fraud-lgbm v1 is already the leader of transactions")
    assert _error(["models", "add-challenger", "fraud-logreg", "1"]) == (
        "fraud-logreg v1 is already a challenger of transactions")
    assert control.published == []


def test_set_leader_still_loads_a_new_leader_before_publishing(
        registry: ModelRegistry, control: Control, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[str, int]] = []
    monkeypatch.setattr(ModelRegistry, "load", lambda self, m, v: loaded.append((m, v)))
    res = _invoke(["models", "set-leader", "fraud-lgbm", "2"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert loaded == [("fraud-lgbm", 2)]
    assert [r.leader for r in control.published] == [LGBM2]


def test_set_leader_refuses_an_unknown_version_before_kafka(
        registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    from precog.services import model_control

    monkeypatch.setattr(model_control, "read_roles", _fail("Kafka"))
    assert _error(["models", "set-leader", "fraud-lgbm", "9"]) == (
        "fraud-lgbm has no version 9 (versions: 1, 2)")


# ------------------------------------------------------------------- models traffic (5)


@pytest.mark.parametrize(("args", "line"), [
    (["--percent", "10"], "--percent needs --canary MODEL:VERSION (the model it is the share of)"),
    (["--canary", "fraud-logreg:1", "--percent", "10", "--shadow"],
     "--shadow ends the split: it cannot go with --canary or --percent"),
    (["--percent", "10", "--shadow"],
     "--shadow ends the split: it cannot go with --canary or --percent"),
])
def test_traffic_refuses_unused_or_conflicting_options_before_kafka(
        args: list[str], line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from precog.services import model_control

    monkeypatch.setattr(model_control, "read_roles", _fail("Kafka"))
    monkeypatch.setattr(model_control, "publish_roles", _fail("publishing"))
    assert _error(["models", "traffic", *args]) == line


def test_traffic_shadow_when_already_shadow_publishes_nothing(
        registry: ModelRegistry, control: Control) -> None:
    res = _invoke(["models", "traffic", "--shadow"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.output.splitlines()[0] == (
        "transactions: traffic is already shadow; nothing published")
    assert control.published == []


def test_traffic_shadow_ends_a_canary(registry: ModelRegistry, control: Control) -> None:
    control.roles = set_traffic(control.roles, canary(LGBM1, LOGREG, 1000, since=2), at=2,
                                by="t")
    res = _invoke(["models", "traffic", "--shadow"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert [r.traffic for r in control.published] == [None]


# ------------------------------------------------------------------- retrain --since (3)


@pytest.mark.parametrize(("args", "line"), [
    (["--since", "99999999d"], "bad --since '99999999d': the window would start before 1970-01-01"),
    (["--since", "1d", "--until", "1969-12-31"], "bad --until '1969-12-31': before 1970-01-01"),
])
def test_retrain_refuses_a_window_before_the_epoch(args: list[str], line: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import precog.pipelines.retrain as pipeline

    monkeypatch.setattr(pipeline, "retrain", _fail("retraining"))
    assert _error(["retrain", "run", *args]) == line


# ------------------------------------------------------------------- setup --templates (4)


def test_setup_refuses_a_templates_directory_without_templates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import precog.namespace as namespace

    monkeypatch.setattr(namespace, "ensure_topics", _fail("Kafka"))
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    assert _error(["setup", "-n", "t1", "--templates", "/nonexistent"]) == (
        "bad --templates '/nonexistent': no such directory")
    assert _error(["setup", "-n", "t1", "--templates", str(csv)]) == (
        f"bad --templates '{csv}': not a directory")
    assert _error(["setup", "-n", "t1", "--templates", str(tmp_path / "empty")]) == (
        f"bad --templates '{tmp_path / 'empty'}': no index templates (*.json) in it")


def test_setup_namespace_reads_the_templates_before_creating_topics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import precog.namespace as namespace

    monkeypatch.setattr(namespace, "ensure_topics", _fail("Kafka"))
    settings = Settings(namespace="t1")
    with pytest.raises(ConfigError, match=r"^index templates /nonexistent: no such directory$"):
        namespace.setup_namespace(settings, SPEC, template_dir=Path("/nonexistent"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        namespace.setup_namespace(settings, SPEC, template_dir=tmp_path)


# ----------------------------------------------------------------------- worker --agents (5)


@pytest.mark.parametrize("agents", ["", " , "])
def test_worker_refuses_an_empty_agent_list(agents: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from precog.services import worker

    monkeypatch.setattr(worker, "run", _fail("the worker"))
    assert _error(["worker", "--agents", agents]) == (
        f"--agents {agents!r} names no agent: give at least one of control, score, index,"
        " join, monitor, lifecycle, retrain")


# ------------------------------------------------------------------------------ serve (1, 7)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import precog.serve.server as server

    monkeypatch.setattr(server, "run", _fail("the server"))
    return {"PRECOG_SERVE_API_KEYS": "k1"}


def test_serve_names_the_option_or_the_variable_of_a_bad_port(no_server: dict[str, str]) -> None:
    assert _error(["serve", "--port", "-1"], no_server) == (
        "bad --port -1: Input should be greater than or equal to 1")
    assert _error(["serve"], {**no_server, "PRECOG_SERVE_PORT": "-1"}) == (
        "invalid setting PRECOG_SERVE_PORT='-1': Input should be greater than or equal to 1")


def test_serve_names_cert_and_key_that_are_not_pem(tmp_path: Path,
                                                   no_server: dict[str, str]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("garbage")
    key.write_text("garbage")
    line = _error(["serve", "--certfile", str(cert), "--keyfile", str(key)], no_server)
    assert line == (f"TLS certificate {cert} with key {key}: not a PEM certificate and its"
                    " private key ([SSL] PEM lib)")
    assert _error(["serve", "--certfile", str(cert)], no_server) == (
        "--certfile and PRECOG_SERVE_TLS_KEYFILE go together: give both to serve HTTPS")
    assert _error(["serve", "--certfile", str(cert), "--keyfile", str(tmp_path / "no")],
                  no_server) == f"--keyfile '{tmp_path / 'no'}': no such file"


def test_serve_names_host_and_port_it_cannot_listen_on(no_server: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _error(["serve", "--port", str(port)], no_server) == (
            f"cannot serve on 127.0.0.1:{port}: Address already in use")
    # TEST-NET-1: an address, but none of this machine's
    assert _error(["serve", "--host", "192.0.2.1", "--port", "8080"], no_server) == (
        "cannot serve on 192.0.2.1:8080: Cannot assign requested address")


# ----------------------------------------------------------------------- stack logs -n (8)


def test_stack_logs_refuses_a_negative_line_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import precog.stack as stack

    monkeypatch.setattr(stack, "logs", _fail("reading the logs"))
    res = _invoke(["stack", "logs", "redis", "-n", "-5"])
    assert res.exit_code == 2
    shown = " ".join(res.output.replace("│", " ").split())
    assert "Invalid value for '-n' / '--lines': Input should be greater than or equal to 0" \
        in shown, res.output
