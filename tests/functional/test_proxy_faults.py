"""Proxy mode when the client or the upstream misbehaves mid-exchange: through the real gateway
(and, where aiohttp's test server would differ from production, served as gateway/server.py
serves it), against a raw TCP upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.support import served_as_in_production

WRITE_POLICY = {
    "routes": [{"id": "w", "methods": ["POST"], "paths": ["/v1/users"], "allow": ["api_key"]}]
}


class RawUpstream:
    """An upstream that reads a request head, optionally answers at once with a partial
    answer, then reads the body until the gateway closes; it records when that happened."""

    def __init__(self, answer_first: bytes = b"") -> None:
        self.answer_first = answer_first
        self.got_head = asyncio.Event()
        self.closed_at: float | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.answer_first:
                writer.write(self.answer_first)
            self.got_head.set()
            while await reader.read(65536):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.closed_at = time.monotonic()


async def test_gateway_client_gone_mid_upload_frees_the_upstream_connection_at_once() -> None:
    # A client that sends part of its body and disconnects (production does not cancel the
    # handler): the exchange ends at once, freeing the upstream connection, its pool slot and
    # its in-flight count, instead of waiting for the read timeout.
    async with RawUpstream() as up:
        settings = make_settings(
            "http://unused.invalid",
            upstreams={"live": {"url": up.url, "read_timeout": "30s"}},
            policy=WRITE_POLICY,
        )
        async with served_as_in_production(settings) as (port, current):
            key, _ = await current.runtime.keys.create("acc_1", "live")
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
                + key.encode()
                + b"\r\nContent-Length: 1000\r\n\r\n"
                + b"x" * 10
            )
            await writer.drain()
            await asyncio.wait_for(up.got_head.wait(), 3)
            writer.transport.abort()  # the client goes away mid-upload
            gone = time.monotonic()
            for _ in range(100):
                if up.closed_at is not None:
                    break
                await asyncio.sleep(0.1)
            assert up.closed_at is not None, "the upstream connection outlived the client"
            assert up.closed_at - gone < 10  # the read timeout (30 s) was not waited for


async def test_gateway_body_too_large_after_the_answer_started_aborts_cleanly(
    make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # SECURITY: the upstream answers (head and part of its body) before taking the whole
    # request body; then the client's chunked body passes max_body_bytes. The client's
    # connection is aborted: no second response follows the 200 that had started.
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!"
    async with RawUpstream(answer_first=partial) as up:
        gw = await make_gateway(
            settings=make_settings(
                "http://unused.invalid",
                upstreams={"live": {"url": up.url}},
                policy=WRITE_POLICY,
                limits={"max_body_bytes": 1000},
            )
        )
        key = await gw.key()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
            + key.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1f4\r\n"
            + b"y" * 500
            + b"\r\n"
        )
        await writer.drain()
        await asyncio.wait_for(up.got_head.wait(), 3)
        head = await asyncio.wait_for(reader.readuntil(b"five!"), 3)
        assert head.startswith(b"HTTP/1.1 200")
        for _ in range(2):  # 1000 more bytes: past the limit
            writer.write(b"1f4\r\n" + b"y" * 500 + b"\r\n")
        await writer.drain()
        rest = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), 2):
                rest += chunk
        writer.close()
        unhandled = [r.getMessage() for r in caplog.records if "unhandled" in r.getMessage()]
        assert unhandled == [], f"logged {unhandled}; the client then read {rest[:200]!r}"
        assert b"HTTP/1.1 500" not in rest
