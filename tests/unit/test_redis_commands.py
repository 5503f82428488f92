"""The feature store's hand-packed commands: RESP framing, and a connection never reused
with a reply still owed."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
from precog.services.feature_store import _exchange, packed
from redis.exceptions import ResponseError


@pytest.mark.parametrize("args", [
    [b"MGET", b"k"],
    [b"EVALSHA", b"ab" * 20, b"2", b"k\r\n1", b"", b"\x00\xff" * 300],
])
def test_a_packed_command_parses_back_to_its_arguments(args: list[bytes]) -> None:
    reader = hiredis.Reader()
    reader.feed(packed(*args))
    assert reader.gets() == args and reader.gets() is False  # one command, nothing left


class FakeConnection:
    """Stands in for redis-py's connection: what was sent, whether it was closed."""

    def __init__(self, reply: object) -> None:
        self.reply, self.sent, self.closed = reply, [], False

    async def send_packed_command(self, command: bytes) -> None:
        self.sent.append(command)

    async def read_response(self) -> object:
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply

    async def disconnect(self) -> None:
        self.closed = True


def test_a_reply_is_returned_and_the_connection_kept() -> None:
    conn = FakeConnection([b"a", None])
    assert asyncio.run(_exchange(conn, b"cmd")) == [b"a", None]
    assert conn.sent == [b"cmd"] and not conn.closed


def test_an_error_reply_keeps_the_connection() -> None:
    conn = FakeConnection(ResponseError("NOSCRIPT No matching script"))
    with pytest.raises(ResponseError):
        asyncio.run(_exchange(conn, b"cmd"))
    assert not conn.closed


@pytest.mark.parametrize("interruption", [asyncio.CancelledError(), ConnectionError("reset"),
                                          TimeoutError("read")])
def test_an_interrupted_exchange_closes_the_connection(interruption: BaseException) -> None:
    conn = FakeConnection(interruption)
    with pytest.raises(type(interruption)):
        asyncio.run(_exchange(conn, b"cmd"))
    assert conn.closed  # its reply may still come: it must not answer the next command
