"""``precog stack up|down|status|logs``: local Kafka, Elasticsearch, Redis, Schema Registry
(precog.stack).

Which stack is driven comes from the settings: ``PRECOG_STACK_HOME`` and the
``PRECOG_STACK_*_PORT`` ports select a second stack beside the first (docs/stack.md);
``--secure`` (or ``PRECOG_STACK_SECURE=true``) the stack with authentication and TLS on
(docs/security.md), whose ``PRECOG_*`` client variables ``precog stack env --secure`` prints.
"""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.settings import Settings

app = typer.Typer(help="The local stack: Kafka (KRaft), Elasticsearch, Redis, Schema Registry"
                  " (Apicurio) as local processes.",
                  no_args_is_help=True)


def _stack():  # type: ignore[no-untyped-def]
    from precog import stack

    return stack


Only = Annotated[
    str | None,
    typer.Option("--only",
                 help="comma-separated subset of kafka,elasticsearch,redis,schema-registry"),
]
Secure = Annotated[
    bool,
    typer.Option("--secure", help="the stack with auth and TLS on, its own home and ports"
                 " (same as PRECOG_STACK_SECURE=true; docs/security.md)"),
]


def _settings(secure: bool) -> Settings:
    return Settings(stack={"secure": True}) if secure else Settings()


def _print_status(rows: list) -> bool:  # type: ignore[type-arg]
    typer.echo(f"{'service':<15} {'mode':<9} {'pid':<11} {'address':<26} health")
    for row in rows:
        typer.echo(row.line())
    return all(row.healthy for row in rows)


@app.command()
def up(only: Only = None, secure: Secure = False) -> None:
    """Start Kafka, Elasticsearch, Redis and the Schema Registry (downloading and building what
    is missing) and wait for health."""
    stack, settings = _stack(), _settings(secure)
    rows = stack.up(settings, echo=typer.echo, only=stack.parse_services(only))
    _print_status(rows)
    layout = stack.Layout.from_settings(settings)
    typer.echo(f"logs: {layout.home}/<service>/logs  (precog stack logs [service])")
    if settings.stack.secure:
        typer.echo('clients: eval "$(precog stack env --secure)"  (exports the PRECOG_* settings'
                   " with the credentials)")


@app.command()
def env(secure: Secure = False) -> None:
    """Print the PRECOG_* exports for the secure stack's clients, passwords included."""
    stack, settings = _stack(), _settings(secure)
    if not settings.stack.secure:
        raise ConfigError("only the secure stack has credentials: precog stack env --secure")
    for line in stack.export_lines(stack.secure_env(settings)):
        typer.echo(line)


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="seconds before TERM becomes KILL")] = 60.0,
    only: Only = None,
    secure: Secure = False,
) -> None:
    """Stop the services this stack home started (only those)."""
    stack = _stack()
    stack.down(_settings(secure), echo=typer.echo, timeout=timeout,
               only=stack.parse_services(only))


@app.command()
def status(only: Only = None, secure: Secure = False) -> None:
    """Each service: mode, pid, address, health, memory; exits 1 when one is down."""
    stack = _stack()
    if not _print_status(stack.status(_settings(secure), stack.parse_services(only))):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[
        str | None,
        typer.Argument(help="kafka, elasticsearch, redis or schema-registry (default: all)"),
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="lines from each log's end")
                     ] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing (tail -F)")] = False,
    secure: Secure = False,
) -> None:
    """Tail the logs of one service or all."""
    stack = _stack()
    if service is not None and service not in stack.SERVICES:
        raise ConfigError(f"unknown service {service!r}: one of {', '.join(stack.SERVICES)}")
    found = stack.logs(_settings(secure), service, lines)
    if follow:
        tail = shutil.which("tail")
        if tail is None:
            raise ConfigError("--follow needs the 'tail' program")
        os.execv(tail, [tail, "-n", str(lines), "-F", *map(str, found)])
    for path, text in found.items():
        typer.echo(f"==> {path} <==")
        for line in text:
            typer.echo(line)
