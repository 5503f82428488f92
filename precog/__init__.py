"""precog: event-driven streaming inference on Kafka."""

import warnings

__version__ = "0.1.0"


def _quiet_authlib() -> None:
    """confluent-kafka's Schema Registry client imports Authlib's httpx integration, which
    warns at import that httpx is deprecated (for httpx2) at every command's start: nothing a
    precog user can act on. Authlib's module sets its warnings to "always" when imported, so
    the filter goes in after it."""
    try:
        from authlib.deprecate import AuthlibDeprecationWarning
    except ImportError:  # not installed: nothing imports it either
        return
    warnings.filterwarnings("ignore", message=r"The httpx module is deprecated",
                            category=AuthlibDeprecationWarning)


_quiet_authlib()
