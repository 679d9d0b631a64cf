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
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import StreamReader
from aiohttp.http_parser import RawResponseMessage

from gateway.config import ConfigError, Upstream
from gateway.forward.connection import UpstreamConnection, UpstreamLost

__all__ = [
    "Answer",
    "ConnectTimeout",
    "UpstreamClient",
    "UpstreamLost",
    "check_upstream_tls",
    "framing",
]

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def framing(method: str, has_body: bool, length_known: bool) -> tuple[str, bool]:
    """The framing line the gateway adds for a request's body (wire form, or ``""``) and
    whether the body is sent chunked: chunked when there is a body of unknown length;
    ``Content-Length: 0`` for a bodyless request whose method may carry one (as aiohttp's
    client does); nothing when the client's ``Content-Length`` is forwarded or none is due."""
    if length_known:
        return "", False
    if has_body:
        return "Transfer-Encoding: chunked\r\n", True
    if method not in BODYLESS_METHODS:
        return "Content-Length: 0\r\n", False
    return "", False


class ConnectTimeout(TimeoutError):
    """No connection to the upstream within ``connect_timeout``."""


def check_upstream_tls(upstreams: Mapping[str, Upstream]) -> None:
    """Every ``https`` upstream's CA bundle and client certificate load, or a
    :class:`ConfigError` names the field (``upstreams.live.ca_file: …``): for ``check-config``,
    ``serve`` and a reload, so that a file that is not PEM, or a certificate renewed with the
    wrong key, is refused before it is used rather than failing every request to the upstream."""
    for name, upstream in upstreams.items():
        if upstream.url.scheme != "https":
            continue
        field = f"upstreams.{name}"
        for attr in ("ca_file", "client_cert", "client_key"):
            path: Path | None = getattr(upstream, attr)
            try:
                if path is not None:
                    path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{field}.{attr}", f"cannot be read: {exc.strerror}") from None
        try:
            ssl.create_default_context(cafile=str(upstream.ca_file) if upstream.ca_file else None)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{field}.ca_file", f"holds no certificate that loads ({exc.reason or 'SSLError'})"
            ) from None
        if upstream.client_cert is None:
            continue
        try:
            ssl_context(upstream)
        except ssl.SSLError as exc:
            reason = exc.reason or "SSLError"
            if reason in _MISMATCH:
                message = f"the certificate and client_key do not match ({reason})"
            else:
                message = f"the certificate or client_key cannot be loaded ({reason})"
            raise ConfigError(f"{field}.client_cert", message) from None


# OpenSSL's reasons for a certificate and a key that are not one pair (another key of the same
# type, or one of another type).
_MISMATCH = frozenset({"KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})


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
    :meth:`close` (or :meth:`release`, which does not wait) once done with it (read whole or
    not); a second call does nothing."""

    __slots__ = ("_client", "_connection", "content", "headers", "reason", "status")

    def __init__(
        self,
        client: UpstreamClient,
        connection: UpstreamConnection,
        message: RawResponseMessage,
        content: StreamReader,
    ) -> None:
        self._client = client
        self._connection: UpstreamConnection | None = connection
        self.status = message.code
        self.reason = message.reason
        self.headers = message.headers
        self.content = content

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client.release(connection)

    async def close(self) -> None:
        """:meth:`release`, and then wait until the request's body writer (when the upstream
        answered before taking it all) has stopped reading the client's body."""
        connection = self._connection
        self.release()
        if connection is not None:
            await connection.stopped()


# What a waiting request is handed: a connection to use, or None, a free slot to connect with
# (the slot stays counted in ``_open``, so nobody else can take it in between).
Turn = UpstreamConnection | None


class UpstreamClient:
    """The connection pool of one upstream and the exchanges on it.

    Requests that find no idle connection and no free slot wait in order: a released
    connection, or the slot of a closed one, is handed to the first of them directly, so a
    request arriving later cannot overtake it.
    """

    def __init__(self, upstream: Upstream, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: the upstream's context, made by the caller with :func:`ssl_context` (the
        pools, which answer a file that no longer loads as a 502); made here when not given."""
        url = upstream.url
        self._host = url.raw_host or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = tls if tls is not None else ssl_context(upstream)
        self._connect_timeout = upstream.connect_timeout
        self._read_timeout = upstream.read_timeout
        self._limit = upstream.max_connections
        self.host_line = f"Host: {url.host_port_subcomponent}\r\n"
        self._idle: deque[UpstreamConnection] = deque()
        self._waiters: deque[asyncio.Future[Turn]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._open = 0
        self._closed = False

    @property
    def open(self) -> int:
        """Connections open now (idle or in use) and slots being connected."""
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
            try:
                if body is None:
                    connection.write(head)
                else:
                    connection.writer = asyncio.get_running_loop().create_task(
                        connection.send(head, body, chunked)
                    )
                message, content = await connection.answer
            except UpstreamLost:
                self.release(connection)
                await connection.stopped()
                if retry and reused and not connection.heard:
                    retry = False
                    continue
                raise
            except BaseException:
                self.release(connection)
                await connection.stopped()
                raise
            return Answer(self, connection, message, content)

    def release(self, connection: UpstreamConnection) -> None:
        """End ``connection``'s exchange: kept if clean (see the module's contract), else
        closed; the first waiter gets the connection or the freed slot."""
        if connection.finish() and not self._closed:
            self._hand_over(connection)
        else:
            connection.close()
            self._free_slot()

    def _hand_over(self, connection: UpstreamConnection) -> None:
        waiter = self._first_waiter()
        if waiter is not None:
            waiter.set_result(connection)
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = loop.call_at(connection.idle_since + KEEPALIVE, self._expire)

    def _free_slot(self) -> None:
        waiter = self._first_waiter()
        if waiter is not None:
            waiter.set_result(None)
        else:
            self._open -= 1

    def _first_waiter(self) -> asyncio.Future[Turn] | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _expire(self) -> None:
        """Close the connections idle for ``KEEPALIVE`` seconds; re-armed for the oldest left."""
        self._sweep = None
        idle = self._idle
        now = asyncio.get_running_loop().time()
        while idle and idle[0].idle_since <= now - KEEPALIVE:
            idle.popleft().close()
            self._open -= 1
        if idle:
            self._sweep = asyncio.get_running_loop().call_at(
                idle[0].idle_since + KEEPALIVE, self._expire
            )

    async def _acquire(self) -> tuple[UpstreamConnection, bool]:
        if self._closed:
            raise UpstreamLost("the pool is closed")
        loop = asyncio.get_running_loop()
        idle = self._idle
        if not self._waiters:
            while idle:
                connection = idle.pop()
                if connection.alive:
                    return connection, True
                connection.close()
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                return await self._connect(loop), False
        waiter: asyncio.Future[Turn] = loop.create_future()
        self._waiters.append(waiter)
        try:
            turn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a turn just as we were cancelled: pass it on.
                handed = waiter.result()
                if handed is not None and handed.alive and not self.closed:
                    self._hand_over(handed)
                else:
                    if handed is not None:
                        handed.close()
                    self._free_slot()
            raise
        if turn is not None:
            if turn.alive and not self.closed:
                return turn, True
            turn.close()  # it died while handed over: its slot is ours
        if self.closed:
            self._open -= 1
            raise UpstreamLost("the pool is closed")
        return await self._connect(loop), False

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        """A new connection in a slot already counted in ``_open``; on failure the slot is
        freed for the next waiter."""
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
            self._free_slot()
            raise ConnectTimeout(f"no connection within {self._connect_timeout} s") from None
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, OSError | ssl.SSLError):
                raise UpstreamLost(f"cannot connect: {exc.__class__.__name__}") from None
            raise
        return connection

    async def close(self) -> None:
        """Close the idle connections now, those in use as they are released; waiting
        requests fail with :class:`UpstreamLost`."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            self._idle.pop().close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamLost("the pool is closed"))
