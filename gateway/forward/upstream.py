"""Proxy mode's HTTP/1.1 client: keep-alive connections to one upstream, each request written
as bytes, each answer parsed by aiohttp's own C response parser.

Why not ``aiohttp.ClientSession``: in a profile of the API-key proxy row (``bench/profile.py
api-key``) a third of the gateway's time went to the client's own machinery (URL and request
objects, cookie and tracing hooks, per-request parser and timers), work a reverse proxy that
already holds a checked header list does not need. This client does what forwarding needs and
no more; the gateway's own calls (JWKS, introspection, membership checks) keep aiohttp's client.

Contract:

- One exchange at a time on a connection. A connection goes back to the pool only when its
  answer was read to the end, the upstream did not ask to close, no byte followed the answer,
  and the request's body was sent whole; anything else closes it (``Answer.release``).
- Before the answer's head: a refused or failed connection, or a connection lost or a malformed
  answer, raises :class:`UpstreamLost`; ``connect_timeout`` and ``read_timeout`` (no byte from
  the upstream, and no body taken by it, for that long) raise :class:`TimeoutError`
  (:class:`ConnectTimeout` for the first). After the head, the same failures fail the body
  stream, and the caller aborts its client's connection.
- A request without a body, with an idempotent method, that finds its reused keep-alive
  connection closed before any answer byte is retried once (RFC 9112 §9.3.1), as aiohttp does:
  an upstream closing an idle connection is not an outage.
- At most ``max_connections`` connections; requests beyond wait for one in order.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import StreamReader
from aiohttp.http_parser import RawResponseMessage

from gateway.config import Upstream
from gateway.forward.connection import UpstreamConnection, UpstreamLost

__all__ = ["Answer", "ConnectTimeout", "UpstreamClient", "UpstreamLost"]

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ConnectTimeout(TimeoutError):
    """No connection to the upstream within ``connect_timeout``."""


def ssl_context(upstream: Upstream) -> ssl.SSLContext | None:
    """The TLS context of an ``https`` upstream (its CA bundle and client certificate)."""
    if upstream.url.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=str(upstream.ca_file) if upstream.ca_file else None)
    if upstream.client_cert is not None:
        context.load_cert_chain(
            str(upstream.client_cert),
            str(upstream.client_key) if upstream.client_key else None,
        )
    return context


class Answer:
    """The upstream's answer: status, reason, headers, and its body as a stream. Call
    :meth:`release` once done with it (read whole or not)."""

    __slots__ = ("_client", "_connection", "content", "headers", "reason", "status")

    def __init__(
        self,
        client: UpstreamClient,
        connection: UpstreamConnection,
        message: RawResponseMessage,
        content: StreamReader,
    ) -> None:
        self._client = client
        self._connection = connection
        self.status = message.code
        self.reason = message.reason
        self.headers = message.headers
        self.content = content

    def release(self) -> None:
        self._client.release(self._connection)


class UpstreamClient:
    """The connection pool of one upstream and the exchanges on it."""

    def __init__(self, upstream: Upstream) -> None:
        url = upstream.url
        self._host = url.raw_host or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl_context(upstream)
        self._connect_timeout = upstream.connect_timeout
        self._read_timeout = upstream.read_timeout
        self._limit = upstream.max_connections
        self.host_line = f"Host: {url.host_port_subcomponent}\r\n"
        self._idle: deque[UpstreamConnection] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._open = 0
        self._closed = False

    @property
    def open(self) -> int:
        """Connections open now, idle or in use."""
        return self._open

    @property
    def closed(self) -> bool:
        return self._closed

    async def exchange(
        self, method: str, head: bytes, body: AsyncIterator[bytes] | None, chunked: bool
    ) -> Answer:
        """Send ``head`` (request line and headers, already checked) and ``body``, and return
        the answer once its head arrived. ``chunked``: send the body in chunked framing."""
        retry = body is None and method in IDEMPOTENT
        while True:
            connection, reused = await self._acquire()
            connection.begin(method == "HEAD", self._read_timeout)
            writer = None
            try:
                if body is None:
                    connection.write(head)
                else:
                    writer = asyncio.get_running_loop().create_task(
                        connection.send(head, body, chunked)
                    )
                    connection.writer = writer
                message, content = await connection.answer
            except UpstreamLost:
                self.release(connection)
                if retry and reused and not connection.heard:
                    retry = False
                    continue
                raise
            except BaseException:
                self.release(connection)
                raise
            return Answer(self, connection, message, content)

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the pool if it is clean (see the module's contract), else closed; either way
        the first waiter gets its turn."""
        if connection.finish() and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()
            self._open -= 1
        self._next_turn()

    async def _acquire(self) -> tuple[UpstreamConnection, bool]:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise UpstreamLost("the pool is closed")
            idle = self._idle
            if idle:
                expired = loop.time() - KEEPALIVE
                while idle and idle[0].idle_since < expired:
                    idle.popleft().close()
                    self._open -= 1
                while idle:
                    connection = idle.pop()
                    if connection.alive:
                        return connection, True
                    connection.close()
                    self._open -= 1
            if self._open < self._limit:
                return await self._connect(loop), False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Our turn came as we were cancelled: pass it on.
                    self._next_turn()
                raise

    def _next_turn(self) -> None:
        """Wake the first request waiting for a connection (it looks at the pool again)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        self._open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            self._open -= 1
            self._next_turn()
            raise ConnectTimeout(f"no connection within {self._connect_timeout} s") from None
        except BaseException as exc:
            self._open -= 1
            self._next_turn()
            if isinstance(exc, OSError | ssl.SSLError):
                raise UpstreamLost(f"cannot connect: {exc.__class__.__name__}") from None
            raise
        return connection

    async def close(self) -> None:
        """Close the idle connections now and the others as they are released."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
