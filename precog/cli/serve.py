"""``precog serve``: score events synchronously over HTTP (docs/serving.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.settings import get_settings

app = typer.Typer(help="Serve synchronous scoring: Open Inference Protocol V2 and /v1/score.")


@app.callback(invoke_without_command=True)
def serve(
    host: str = typer.Option(None, help="bind address [PRECOG_SERVE_HOST, 127.0.0.1]"),
    port: int = typer.Option(None, help="port [PRECOG_SERVE_PORT, 8080]"),
    read_only: bool = typer.Option(
        None, "--read-only/--update-state",
        help="score without updating entity state [PRECOG_SERVE_READ_ONLY, update]"),
    certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate [PRECOG_SERVE_TLS_CERTFILE]")] = None,
    keyfile: Annotated[
        Path | None, typer.Option(help="TLS key [PRECOG_SERVE_TLS_KEYFILE]")] = None,
    loglevel: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Run until interrupted; API keys from PRECOG_SERVE_API_KEYS (comma-separated)."""
    from precog.serve.server import run

    if loglevel not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"bad --loglevel {loglevel!r}")
    settings = get_settings()
    given = {"host": host, "port": port, "read_only": read_only, "tls_certfile": certfile,
             "tls_keyfile": keyfile}
    update = {k: v for k, v in given.items() if v is not None}
    if update:
        serve_settings = settings.serve.model_validate({**settings.serve.model_dump(), **update})
        settings = settings.model_copy(update={"serve": serve_settings})
    run(settings, loglevel)
