"""The worker's agent table and ``--agents``: known names only, one line for an unknown one."""

from __future__ import annotations

import sys

import pytest
from precog.services import worker
from precog.services.agents import index, join, lifecycle, monitor, retrain, role_watcher, score

from precog.cli import main
from precog.cli import worker as worker_cli
from precog.errors import ConfigError

pytestmark = pytest.mark.unit


def test_the_table_registers_each_agent_module_in_the_documented_order() -> None:
    table = list(worker.AGENTS.items())
    assert table == [
        ("control", role_watcher.register),
        ("score", score.register),
        ("index", index.register),
        ("join", join.register),
        ("monitor", monitor.register),
        ("lifecycle", lifecycle.register),
        ("retrain", retrain.register),
    ]
    # the retrain controller is opt-in (one worker per namespace): not a default
    assert worker.DEFAULT_AGENTS == ("control", "score", "index", "join", "monitor", "lifecycle")


def test_the_cli_default_runs_every_default_agent() -> None:
    option = worker_cli.worker.__defaults__[0]  # type: ignore[index]
    assert tuple(option.default.split(",")) == worker.DEFAULT_AGENTS


def test_agent_names_keep_the_order_given_and_drop_blanks() -> None:
    assert worker.agent_names(["index", " control", "", "score "]) == ("index", "control",
                                                                        "score")


def test_agent_names_name_every_unknown_agent() -> None:
    with pytest.raises(ConfigError) as exc:
        worker.agent_names(["score", "scoring", "Index"])
    assert str(exc.value) == ("unknown agents 'scoring', 'Index'; "
                              "choose from control, score, index, join, monitor, lifecycle,"
                              " retrain")


def test_build_runtime_refuses_an_unknown_agent_before_building_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_app(*args: object, **kwargs: object) -> None:
        raise AssertionError("the app must not be built for a bad agent list")

    monkeypatch.setattr(worker, "create_app", no_app)
    with pytest.raises(ConfigError, match="unknown agent 'roles'"):
        worker.build_runtime(None, ("control", "roles"))  # type: ignore[arg-type]


def test_an_unknown_agent_is_one_line_on_stderr_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the worker must not start")

    monkeypatch.setattr(worker, "run", must_not_run)
    monkeypatch.setattr(sys, "argv", ["precog", "worker", "--agents", "control,scoring"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == ("precog: error: unknown agent 'scoring'; "
                   "choose from control, score, index, join, monitor, lifecycle, retrain\n")
