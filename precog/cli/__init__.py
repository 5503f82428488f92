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
    except OSError as exc:  # a path that cannot be read or written, named with the reason
        typer.secho(f"precog: error: {os_error_line(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("precog: interrupted", err=True)
        sys.exit(130)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path(s) and the reason.

    >>> os_error_line(FileNotFoundError(2, "No such file or directory", "/proc/x/out.avro"))
    '/proc/x/out.avro: No such file or directory'
    >>> os_error_line(OSError(18, "Invalid cross-device link", "a", None, "b"))
    'a -> b: Invalid cross-device link'
    >>> os_error_line(ConnectionRefusedError("connection refused"))
    'ConnectionRefusedError: connection refused'
    """
    if exc.filename is None:
        return f"{type(exc).__name__}: {exc}"
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {exc.strerror or exc}"
