"""The ``precog`` command line: one sub-command group per module in this package."""

from __future__ import annotations

import importlib
import sys

import pydantic
import typer

from precog.errors import PrecogError

app = typer.Typer(
    name="precog",
    help="Streaming inference on Kafka: stack, simulate, train, models, worker, serve, replay,"
         " score-batch, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: (module in precog.cli, command name). Each module exposes ``app`` (a typer.Typer).
_GROUPS = [
    ("stack", "stack"),
    ("setup", "setup"),
    ("namespace", "namespace"),
    ("simulate", "simulate"),
    ("history", "history"),
    ("train", "train"),
    ("retrain", "retrain"),
    ("backfill", "backfill"),
    ("models", "models"),
    ("worker", "worker"),
    ("serve", "serve"),
    ("kibana", "kibana"),
    ("report", "report"),
    ("replay", "replay"),
    ("score_batch", "score-batch"),
    ("bench", "bench"),
]

for _module, _name in _GROUPS:
    try:
        _mod = importlib.import_module(f"precog.cli.{_module}")
    except ModuleNotFoundError as _exc:  # a group not built yet
        if _exc.name != f"precog.cli.{_module}":
            raise
        continue
    app.add_typer(_mod.app, name=_name)


def main() -> None:
    """Entry point: run the CLI; precog's own errors become one line on stderr, exit 2."""
    try:
        app()
    except PrecogError as exc:
        typer.secho(f"precog: error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except pydantic.ValidationError as exc:  # a PRECOG_* setting is invalid
        from precog.settings import validation_message

        typer.secho(f"precog: error: {validation_message(exc)}", fg=typer.colors.RED,
                    err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("precog: interrupted", err=True)
        sys.exit(130)
