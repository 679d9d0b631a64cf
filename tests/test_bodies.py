"""gateway.bodies: bounded reads of a whole body, and what a client's broken body is answered."""

from __future__ import annotations

import asyncio
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import BadHttpMessage, TransferEncodingError

from gateway.bodies import CLIENT_BODY_FAILURES, client_body_error, read_at_most
from gateway.errors import InvalidRequest, RequestTimeout


def stream_of(*pieces: bytes) -> aiohttp.StreamReader:
    """A real aiohttp StreamReader fed in pieces, as TCP segments arrive (the protocol is the
    only stand-in: it only counts flow control)."""
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(mock.Mock(spec=BaseProtocol), 2**16, loop=loop)

    def feed() -> None:
        if pieces_left:
            stream.feed_data(pieces_left.pop(0))
            loop.call_later(0.01, feed)
        else:
            stream.feed_eof()

    pieces_left = list(pieces)
    loop.call_soon(feed)
    return stream


async def test_a_stalled_body_raises_timeout_error_after_stall_seconds() -> None:
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(mock.Mock(spec=BaseProtocol), 2**16, loop=loop)
    stream.feed_data(b'{"user_id":')  # and then nothing more
    reading = asyncio.ensure_future(read_at_most(stream, 1024, stall=0.2))
    done, _ = await asyncio.wait([reading], timeout=5)  # the bound (0.2 s), with margin
    assert done, "still reading a stalled body"
    assert isinstance(reading.exception(), TimeoutError)


async def test_segments_each_within_the_stall_are_read_whole() -> None:
    body = b"x" * 3000
    pieces = [body[i : i + 500] for i in range(0, len(body), 500)]  # 10 ms apart
    assert await read_at_most(stream_of(*pieces), 64 * 1024, stall=1.0) == body


async def test_a_body_in_many_segments_is_read_whole() -> None:
    body = b'{"keys": [' + b'{"kid": "k"},' * 200 + b"{}]}"
    pieces = [body[i : i + 500] for i in range(0, len(body), 500)]
    assert await read_at_most(stream_of(*pieces), 64 * 1024) == body


async def test_a_body_past_the_limit_is_cut_just_past_it() -> None:
    assert len(await read_at_most(stream_of(b"x" * 700, b"y" * 700), 1000)) == 1001


@pytest.mark.parametrize(
    ("failure", "status", "code", "reason"),
    [
        (TimeoutError(), 408, RequestTimeout.code, None),
        (ConnectionResetError(), 400, InvalidRequest.code, "body_incomplete"),
        (ConnectionAbortedError(), 400, InvalidRequest.code, "body_incomplete"),
        (web.RequestPayloadError("bad chunk"), 400, InvalidRequest.code, "malformed_body"),
        (TransferEncodingError("bad chunk size"), 400, InvalidRequest.code, "malformed_body"),
        (BadHttpMessage("bad"), 400, InvalidRequest.code, "malformed_body"),
    ],
)
def test_each_client_body_failure_has_its_answer_and_closes_the_connection(
    failure: BaseException, status: int, code: str, reason: str | None
) -> None:
    assert isinstance(failure, CLIENT_BODY_FAILURES)
    error = client_body_error(failure)
    assert (error.status, error.code) == (status, code)
    assert error.details.get("reason") == reason
    assert error.headers["Connection"] == "close"
