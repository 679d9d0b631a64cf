"""gateway.forward.upstream: proxy mode's own HTTP/1.1 client, against a real TCP upstream on
127.0.0.1 that answers with scripted bytes (a well-behaved one, and the ways one goes wrong)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientPayloadError
from yarl import URL

from gateway.config import Upstream
from gateway.forward import upstream as upstream_module
from gateway.forward.upstream import Answer, ConnectTimeout, UpstreamClient, UpstreamLost

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET /x HTTP/1.1\r\nHost: up\r\n\r\n"

# A script answers one request: the bytes to send, then what to do with the connection.
Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
def no_loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A protocol callback that raised is logged by the loop, which then closes the connection:
    that must never be how a connection ends here."""
    yield
    errors = [r.getMessage() for r in caplog.get_records("call") if r.levelname == "ERROR"]
    assert errors == []


def send(data: bytes, close: bool = False, hold: bool = False) -> Script:
    """Send ``data``; then close the connection, or hold it (send nothing more until the test
    ends), or read the next request."""

    async def act(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if hold:
            await writer.wait_closed()
        if close:
            writer.close()

    return act


async def hang(writer: asyncio.StreamWriter) -> None:
    await writer.wait_closed()


async def close_at_once(writer: asyncio.StreamWriter) -> None:
    writer.close()


class Scripted:
    """An upstream answering the n-th request (across connections) with the n-th script; it
    records each request's head and body and counts connections."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while self.scripts:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        body = await reader.readexactly(int(value))
                    elif name.lower() == b"transfer-encoding":
                        body = await read_chunked(reader)
                self.requests.append((head, body))
                await self.scripts.pop(0)(writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readexactly(2)
    return body


def client_of(port: int, **settings: Any) -> UpstreamClient:
    return UpstreamClient(Upstream(name="live", url=URL(f"http://127.0.0.1:{port}"), **settings))


async def fetch(
    client: UpstreamClient, head: bytes = GET, method: str = "GET"
) -> tuple[int, bytes]:
    answer = await client.exchange(method, head, None, chunked=False)
    try:
        return answer.status, await answer.content.read()
    finally:
        answer.release()


async def test_a_connection_is_kept_and_reused() -> None:
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


async def test_an_answer_asking_to_close_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with Scripted(send(closing), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_bytes_after_the_answer_never_reach_the_next_request() -> None:
    # SECURITY: a second answer smuggled behind the first (response splitting, a desynced
    # upstream) is not handed to the next client: the connection is closed instead.
    smuggled = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"
    async with Scripted(send(smuggled), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_bytes_after_the_answer_in_a_later_read_close_the_connection() -> None:
    # SECURITY: the start of a second answer, arriving after the first one ended, is not left
    # in the connection for the next request to find.
    async def then_partial(writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\n")

    async with Scripted(then_partial, send(OK)) as up:
        client = client_of(up.port)
        answer = await client.exchange("GET", GET, None, chunked=False)
        assert await answer.content.read() == b"ok"
        await asyncio.sleep(0.3)
        answer.release()
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_bytes_arriving_on_an_idle_connection_close_it() -> None:
    # SECURITY: bytes no request asked for, arriving while the connection waits in the pool,
    # would be read as the next request's answer.
    late = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

    async def then_late(writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await asyncio.sleep(0.1)
        writer.write(late)

    async with Scripted(then_late, send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        await asyncio.sleep(0.3)
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_interim_answers_are_skipped() -> None:
    hints = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    async with Scripted(send(hints + OK), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=[
        "unasked-upgrade",
        "bare-101",
        "garbage",
        "two-lengths",
        "length-and-chunked",
        "status-below-100",
    ],
)
async def test_an_answer_that_is_not_one_clean_http_answer_is_lost(answer: bytes) -> None:
    # SECURITY: ambiguous framing is refused, never guessed at.
    async with Scripted(send(answer)) as up:
        client = client_of(up.port)
        with pytest.raises(UpstreamLost):
            await fetch(client)
        await client.close()


async def test_a_reused_connection_closed_by_the_upstream_is_retried_once() -> None:
    async with Scripted(send(OK), close_at_once, send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        assert len(up.requests) == 3
        await client.close()


async def test_a_request_with_a_body_is_never_sent_twice() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"payload"

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nContent-Length: 7\r\n\r\n"
    async with Scripted(send(OK), close_at_once, send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        with pytest.raises(UpstreamLost):
            await client.exchange("POST", post, body(), chunked=False)
        assert [b for _, b in up.requests] == [b"", b"payload"]
        await client.close()


async def test_a_new_connection_closed_before_answering_is_not_retried() -> None:
    async with Scripted(close_at_once, send(OK)) as up:
        client = client_of(up.port)
        with pytest.raises(UpstreamLost):
            await fetch(client)
        assert len(up.requests) == 1
        await client.close()


async def test_a_silent_upstream_times_out() -> None:
    async with Scripted(hang) as up:
        client = client_of(up.port, read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await fetch(client)
        await client.close()


async def test_an_answer_that_stalls_mid_body_fails_its_body() -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!"
    async with Scripted(send(partial, hold=True)) as up:
        client = client_of(up.port, read_timeout=0.2)
        answer = await client.exchange("GET", GET, None, chunked=False)
        with pytest.raises(TimeoutError):
            await answer.content.read()
        answer.release()
        await client.close()


async def test_a_client_slow_to_read_is_not_an_upstream_timeout() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000
    async with Scripted(send(big)) as up:
        client = client_of(up.port, read_timeout=1.0)
        answer = await client.exchange("GET", GET, None, chunked=False)
        await asyncio.sleep(2.5)  # the buffer fills and reading pauses meanwhile
        assert len(await answer.content.read()) == 2_000_000
        answer.release()
        await client.close()


async def test_an_answer_cut_short_fails_its_body() -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!"
    async with Scripted(send(partial, close=True), send(OK)) as up:
        client = client_of(up.port)
        answer = await client.exchange("GET", GET, None, chunked=False)
        with pytest.raises(ClientPayloadError):
            await answer.content.read()
        answer.release()
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_an_answer_framed_by_the_connection_end_is_read_whole() -> None:
    unframed = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000
    async with Scripted(send(unframed, close=True), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"x" * 100_000)
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_a_head_answer_has_no_body_and_keeps_the_connection() -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    async with Scripted(send(head_answer), send(OK)) as up:
        client = client_of(up.port)
        head = b"HEAD /x HTTP/1.1\r\nHost: up\r\n\r\n"
        assert await fetch(client, head, "HEAD") == (200, b"")
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


async def test_a_chunked_body_is_sent_in_chunks() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted(send(OK)) as up:
        client = client_of(up.port)
        answer = await client.exchange("POST", post, body(), chunked=True)
        assert answer.status == 200 and await answer.content.read() == b"ok"
        answer.release()
        assert up.requests[0][1] == b"hello world"
        await client.close()


async def test_a_failing_body_fails_the_exchange_with_its_error() -> None:
    class Broken(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"start"
        raise Broken

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted(hang) as up:
        client = client_of(up.port)
        with pytest.raises(Broken):
            await client.exchange("POST", post, body(), chunked=True)
        assert client.open == 0
        await client.close()


async def test_requests_beyond_the_pool_wait_for_a_connection() -> None:
    async with Scripted(*[send(OK) for _ in range(5)]) as up:
        client = client_of(up.port, max_connections=1)
        results = await asyncio.gather(*(fetch(client) for _ in range(5)))
        assert results == [(200, b"ok")] * 5
        assert up.connections == 1
        await client.close()


async def test_a_refused_connection_is_lost() -> None:
    from tests.support import free_port

    client = client_of(free_port())
    with pytest.raises(UpstreamLost):
        await fetch(client)
    assert client.open == 0
    await client.close()


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A listening socket whose backlog is full and which never accepts: a new connection's
    SYN goes unanswered, so connecting to it hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connection_not_accepted_in_time_is_a_connect_timeout() -> None:
    with unaccepting_port() as port:
        client = client_of(port, connect_timeout=0.2)
        try:
            with pytest.raises(ConnectTimeout):
                await fetch(client)
            assert client.open == 0
        finally:
            await client.close()


async def test_a_closed_client_opens_nothing() -> None:
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        await client.close()
        assert client.closed and client.open == 0
        with pytest.raises(UpstreamLost):
            await fetch(client)


async def test_an_unread_answer_released_closes_its_connection() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000
    async with Scripted(send(big), send(OK)) as up:
        client = client_of(up.port)
        answer: Answer = await client.exchange("GET", GET, None, chunked=False)
        answer.release()
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 2
        await client.close()


async def test_an_upload_the_upstream_is_taking_is_not_a_stall() -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(6):
            await asyncio.sleep(0.4)
            yield b"part"

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted(send(OK)) as up:
        client = client_of(up.port, read_timeout=1.0)  # the upload takes 2.4 s
        answer = await client.exchange("POST", post, slow_body(), chunked=True)
        assert answer.status == 200 and await answer.content.read() == b"ok"
        answer.release()
        assert up.requests[0][1] == b"part" * 6
        await client.close()


async def test_the_read_timeout_does_not_touch_idle_connections() -> None:
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port, read_timeout=0.2)
        assert await fetch(client) == (200, b"ok")
        await asyncio.sleep(0.5)
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


async def test_an_answer_before_the_whole_body_stops_the_upload() -> None:
    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 1000
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    async def answer_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(answer_at_once, "127.0.0.1", 0)
    client = client_of(server.sockets[0].getsockname()[1])
    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = await client.exchange("POST", post, endless(), chunked=True)
    assert answer.status == 200 and await answer.content.read() == b"ok"
    answer.release()
    await asyncio.wait_for(stopped.wait(), 2)
    assert client.open == 0  # the body was not sent whole: the connection is not reused
    await client.close()
    server.close()
    await server.wait_closed()


async def test_the_start_of_another_answer_in_the_same_read_closes_the_connection() -> None:
    # SECURITY: an incomplete head right behind the answer, in the same read, would be held
    # unseen by the parser and the connection would look clean; it is closed instead.
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"  # an answer whose body is never read
    for answer, stray in ((OK, b"HTTP/1.1 200 OK\r\nX-Pad: "), (OK, b"H"), (empty, b"H")):
        async with Scripted(send(answer + stray), send(OK)) as up:
            client = client_of(up.port)
            assert (await fetch(client))[1] in (b"ok", b"")
            assert await fetch(client) == (200, b"ok")
            assert up.connections == 2
            await client.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["204", "204-cl0", "304-cl5", "304-chunked"],
)
async def test_bodyless_statuses_end_at_their_head_and_keep_the_connection(answer: bytes) -> None:
    async with Scripted(send(answer), send(OK)) as up:
        client = client_of(up.port)
        status, body = await fetch(client)
        assert body == b"" and status in (204, 304)
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


async def test_idle_connections_are_closed_after_keepalive_without_new_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An idle connection is closed after the keep-alive time even if no request comes.
    monkeypatch.setattr(upstream_module, "KEEPALIVE", 0.2)
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        await asyncio.sleep(0.6)
        assert client.open == 0, "an idle connection outlived the keep-alive time"
        await client.close()


async def test_a_client_body_that_breaks_with_a_connection_error_fails_the_exchange_at_once() -> (
    None
):
    # A client gone mid-upload (aiohttp fails the request body with ConnectionResetError) ends
    # the exchange at once, not after the read timeout, and frees its connection.
    async def body() -> AsyncIterator[bytes]:
        yield b"start"
        raise ConnectionResetError("Connection lost")  # what request.content.read() raises

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted(hang) as up:
        client = client_of(up.port, read_timeout=30)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(client.exchange("POST", post, body(), chunked=True), 10)
        assert client.open == 0
        await client.close()


async def test_a_body_failure_after_the_head_fails_the_body_with_a_client_error() -> None:
    # SECURITY: after the answer started, a failure of the client's body reaches the answer's
    # reader as a ClientError (which aborts the client's connection), never as an error of its
    # own that would become a second response (tests/functional/test_proxy_faults.py).
    from aiohttp import ClientError

    class Broken(Exception):
        pass

    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"start"
        await gate.wait()
        raise Broken

    post = b"POST /x HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
    writers: list[asyncio.StreamWriter] = []

    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!")
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = client_of(server.sockets[0].getsockname()[1])
    answer = await client.exchange("POST", post, body(), chunked=True)
    gate.set()
    with pytest.raises(BaseException) as caught:
        await answer.content.read()
    answer.release()
    await client.close()
    for writer in writers:
        writer.transport.abort()
    await asyncio.wait_for(done.wait(), 2)
    server.close()
    await server.wait_closed()
    assert isinstance(caught.value, ClientError | TimeoutError | ConnectionError), repr(
        caught.value
    )


async def test_a_client_slow_to_take_a_complete_answer_does_not_cost_the_connection() -> None:
    # The upstream sent the whole answer; only the client is slow: not an upstream stall, and
    # the connection stays.
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port, read_timeout=0.2)
        answer = await client.exchange("GET", GET, None, chunked=False)
        await asyncio.sleep(0.5)  # a slow client: the relay has not drained the answer yet
        assert await answer.content.read() == b"ok"
        answer.release()
        assert await fetch(client) == (200, b"ok")
        assert up.connections == 1
        await client.close()


async def test_cancellation_in_every_phase_leaks_no_slot() -> None:
    async with Scripted(hang, *[send(OK) for _ in range(3)]) as up:
        client = client_of(up.port, max_connections=1)
        holder = asyncio.ensure_future(fetch(client))  # holds the only connection (hang)
        await asyncio.sleep(0.1)
        waiter = asyncio.ensure_future(fetch(client))  # waits for a turn
        await asyncio.sleep(0.05)
        waiter.cancel()
        holder.cancel()
        for task in (holder, waiter):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert client.open == 0
        assert await asyncio.wait_for(fetch(client), 2) == (200, b"ok")
        assert client.open == 1
        await client.close()


async def test_cancellation_while_connecting_leaks_no_slot() -> None:
    with unaccepting_port() as port:
        client: UpstreamClient = client_of(port, connect_timeout=5, max_connections=1)
        try:
            first = asyncio.ensure_future(fetch(client))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(fetch(client))
            await asyncio.sleep(0.05)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            await asyncio.sleep(0.05)
            assert client.open == 1  # the second took the freed slot and is connecting
            second.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await second
            assert client.open == 0
        finally:
            await client.close()


async def test_a_retry_is_only_for_a_reused_connection_and_once() -> None:
    async with Scripted(send(OK), send(b"", close=True), send(b"", close=True)) as up:
        client = client_of(up.port)
        assert await fetch(client) == (200, b"ok")
        with pytest.raises(UpstreamLost):
            await fetch(client)
        assert len(up.requests) == 3  # the original, one retry on a new connection, no more
        await client.close()


async def test_a_woken_waiter_is_not_overtaken_by_a_newcomer() -> None:
    # Requests beyond the pool wait in order: a released connection goes to the first waiter,
    # not to a request arriving in the same tick.
    async with Scripted(*[send(OK) for _ in range(3)]) as up:
        client = client_of(up.port, max_connections=1)
        first = await client.exchange("GET", GET, None, chunked=False)
        assert await first.content.read() == b"ok"
        order: list[str] = []

        async def request(name: str) -> None:
            assert await fetch(client) == (200, b"ok")
            order.append(name)

        waiting = asyncio.ensure_future(request("waiting"))
        await asyncio.sleep(0.05)  # it waits for the only connection
        newcomer = asyncio.ensure_future(request("newcomer"))  # arrives in the same tick
        first.release()
        await asyncio.gather(waiting, newcomer)
        assert order == ["waiting", "newcomer"]
        await client.close()


async def test_releasing_an_answer_twice_does_not_corrupt_the_pool_count() -> None:
    # A second release does nothing (the pool's count stays right).
    async with Scripted(send(OK), send(OK)) as up:
        client = client_of(up.port)
        answer = await client.exchange("GET", GET, None, chunked=False)
        assert await answer.content.read() == b"ok"
        answer.release()
        answer.release()
        assert client.open == 1
        await client.close()
