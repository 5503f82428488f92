"""API keys for ``precog serve``: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

The keys come from the settings (``PRECOG_SERVE_API_KEYS``, comma-separated); a request
without one of them is refused with 401. Keys are compared in constant time.

>>> check = KeyCheck(frozenset({"k1"}))
>>> check({"x-api-key": "k1"}), check({"authorization": "Bearer k1"})
(None, None)
>>> check({}), check({"authorization": "Bearer nope"})
('no API key: send X-API-Key or Authorization: Bearer', 'the API key is not valid')
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from precog.errors import ConfigError


class KeyCheck:
    """Whether a request's headers carry a configured key; the refusal's reason if not."""

    def __init__(self, keys: frozenset[str]) -> None:
        if not keys:
            raise ConfigError("PRECOG_SERVE_API_KEYS is empty: precog serve refuses to run"
                              " without API keys (comma-separated)")
        self._keys = [k.encode() for k in keys]

    def __call__(self, headers: Mapping[str, str]) -> str | None:
        given = headers.get("x-api-key")
        if given is None:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                given = token.strip()
        if given is None:
            return "no API key: send X-API-Key or Authorization: Bearer"
        raw = given.encode()
        # every key compared, in constant time: the time says nothing about which matched
        matched = [hmac.compare_digest(raw, k) for k in self._keys]
        return None if any(matched) else "the API key is not valid"
