"""``precog serve``: score events synchronously over HTTP (docs/serving.md)."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from precog.errors import ConfigError
from precog.settings import ServeSettings, get_settings, validation_message

app = typer.Typer(help="Serve synchronous scoring: Open Inference Protocol V2 and /v1/score.")

#: ServeSettings field -> the option that sets it
_OPTIONS = {"host": "--host", "port": "--port", "read_only": "--read-only",
            "tls_certfile": "--certfile", "tls_keyfile": "--keyfile"}


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
        try:
            serve_settings = settings.serve.model_validate({**settings.serve.model_dump(),
                                                            **update})
        except ValidationError as exc:
            raise ConfigError(validation_message(
                exc, {k: o for k, o in _OPTIONS.items() if k in update})) from None
        settings = settings.model_copy(update={"serve": serve_settings})
    check_tls(settings.serve, given)
    check_bind(settings.serve.host, settings.serve.port)
    run(settings, loglevel)


def _source(field: str, given: dict[str, object]) -> str:
    """The option or the variable a serve setting came from."""
    return _OPTIONS[field] if given.get(field) is not None else f"PRECOG_SERVE_{field.upper()}"


def check_tls(serve: ServeSettings, given: dict[str, object] | None = None) -> None:
    """The certificate and key load (PEM, the key matches the certificate), as uvicorn will
    load them; else one line naming both files (``given``: the options given, to name them).

    >>> check_tls(ServeSettings())  # no TLS: nothing to check
    """
    cert, key = serve.tls_certfile, serve.tls_keyfile
    if cert is None and key is None:
        return
    given = given or {}
    if cert is None or key is None:
        raise ConfigError(f"{_source('tls_certfile', given)} and {_source('tls_keyfile', given)}"
                          " go together: give both to serve HTTPS")
    for field, path in (("tls_certfile", cert), ("tls_keyfile", key)):
        if not path.is_file():
            raise ConfigError(f"{_source(field, given)} {str(path)!r}: no such file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # "[SSL] PEM lib (_ssl.c:3905)": the reason, not the C line
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc.args[-1]))
        raise ConfigError(f"TLS certificate {cert} with key {key}: not a PEM certificate and"
                          f" its private key ({reason})") from None
    except OSError as exc:
        raise ConfigError(f"TLS certificate {cert} with key {key}: {exc.strerror or exc}"
                          ) from None


def check_bind(host: str, port: int) -> None:
    """``host:port`` can be listened on (as uvicorn's asyncio server binds it), else one
    line naming it: a host that is no address of this machine, a port in use.

    >>> check_bind("127.0.0.1", 0)
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(f"cannot serve on {where}: bad host ({reason})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(f"cannot serve on {where}: {exc.strerror or exc}") from None
