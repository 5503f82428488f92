"""Run the ``precog serve`` app on uvicorn: preflight, TLS, one event loop (uvloop)."""

from __future__ import annotations

import logging

from precog.errors import ConfigError
from precog.settings import Settings


def tls_options(settings: Settings) -> dict[str, str]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` from the settings; both or neither.

    >>> tls_options(Settings())
    {}
    """
    cert, key = settings.serve.tls_certfile, settings.serve.tls_keyfile
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ConfigError("PRECOG_SERVE_TLS_CERTFILE and PRECOG_SERVE_TLS_KEYFILE go together:"
                          " set both to serve HTTPS")
    for name, path in (("PRECOG_SERVE_TLS_CERTFILE", cert), ("PRECOG_SERVE_TLS_KEYFILE", key)):
        if not path.is_file():
            raise ConfigError(f"{name}={path}: no such file")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def run(settings: Settings, loglevel: str = "info") -> None:
    """Check Kafka and Redis answer (fail fast, one line), then serve until interrupted."""
    import uvicorn

    from precog.registry import code_version
    from precog.serve.app import create_app
    from precog.services.preflight import check_kafka, check_redis
    from precog.spec import load_spec

    tls = tls_options(settings)
    spec = load_spec(settings.spec)
    check_kafka(settings)
    check_redis(settings)
    app = create_app(settings, spec, code_version(settings))
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s:"
                        " %(message)s")
    uvicorn.run(app, host=settings.serve.host, port=settings.serve.port, log_level=loglevel,
                loop=settings.worker.loop, http="httptools", access_log=False, **tls)  # type: ignore[arg-type]
