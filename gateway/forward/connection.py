"""One keep-alive connection to an upstream, as an asyncio protocol (see
:mod:`gateway.forward.upstream` for the pool and the contract).

An exchange is :meth:`UpstreamConnection.begin`, the request written (:meth:`~UpstreamConnection.
write` or :meth:`~UpstreamConnection.send`), ``await connection.answer`` for the head, the body
read from the answer's stream, then :meth:`~UpstreamConnection.finish`, which says whether the
connection may carry another exchange. Any doubt about where one answer ends and the next
begins closes the connection: reusing it could hand one client the tail of another's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import ClientPayloadError, StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage

Head = tuple[RawResponseMessage, StreamReader]


class UpstreamLost(ConnectionError):
    """The upstream refused or lost the connection, or answered with something other than one
    HTTP answer, before the answer's head."""


class UpstreamConnection(BaseProtocol):
    """A connection carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.answer: asyncio.Future[Head] = loop.create_future()
        self.writer: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None  # a writer finish() cancelled
        self.idle_since = 0.0
        self.heard = False  # a byte of this exchange's answer arrived
        self._response_parser: HttpResponseParser | None = None
        self._head: Head | None = None
        self._ended = False  # the answer's end was reached and checked for bytes after it
        self._spoiled = False
        self._last = 0.0
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        transport = self.transport
        return transport is not None and not self._spoiled and not transport.is_closing()

    def begin(self, head_only: bool, read_timeout: float) -> None:
        """Start an exchange; ``head_only``: the request is a HEAD (its answer has no body)."""
        loop = self._loop
        self._response_parser = self._parser = HttpResponseParser(
            self,
            loop,
            2**16,
            payload_exception=ClientPayloadError,
            response_with_body=not head_only,
            read_until_eof=True,
            auto_decompress=False,
        )
        self.answer = loop.create_future()
        self.writer = None
        self.heard = False
        self._head = None
        self._ended = False
        self._read_timeout = read_timeout
        self._last = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._last + read_timeout, self._check)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            raise UpstreamLost("connection lost")
        self.transport.write(data)

    async def send(self, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> None:
        """Write the head and stream ``body`` (chunked framing if ``chunked``). Whatever breaks
        the body (the client: too large, too slow, gone, broken framing) fails the exchange with
        its own error at once; a failure to write is the connection's, which reports it."""
        try:
            self.write(head)
            async for chunk in body:
                if not chunk:
                    continue
                self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._paused:
                    try:
                        await self._drain_helper()
                    except ConnectionError:
                        self._spoiled = True
                        return
                self._last = self._loop.time()  # the upstream is taking the body: not stalled
            if chunked:
                self.write(b"0\r\n\r\n")
        except UpstreamLost:
            self._spoiled = True  # the connection is gone: it reports that itself
        except Exception as exc:  # whatever broke the body fails the exchange
            self.fail(exc)

    def finish(self) -> bool:
        """End the exchange; True when the connection may carry another (the answer read to
        its end, no close asked for, no byte after it, the request's body sent whole)."""
        self._response_parser = self._parser = None
        writer, self.writer = self.writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            self._stopping = writer
            self._spoiled = True
        if self.answer.done() and not self.answer.cancelled():
            self.answer.exception()  # retrieved: a failure was already reported or is moot
        head, self._head = self._head, None
        return (
            self.alive
            and head is not None
            and head[1].is_eof()
            and head[1].exception() is None
            and not head[0].should_close
        )

    async def stopped(self) -> None:
        """Until a body writer :meth:`finish` cancelled has stopped: it may be waiting on the
        client's body, which the server reads (and drops) itself once the handler returns, and
        a stream allows one reader at a time."""
        writer, self._stopping = self._stopping, None
        if writer is not None:
            # Bounded: a cancellation a wait_for swallowed (Python 3.11) must not hold the
            # handler until the client's body_timeout.
            await asyncio.wait([writer], timeout=1.0)

    def fail(self, exc: BaseException) -> None:
        """Fail the exchange with ``exc`` (its head if still awaited, else its body) and abort
        the connection. Once the answer has started, anything but a timeout reaches its reader
        as a :class:`ClientPayloadError` (caused by ``exc``): the reader then aborts its own
        client's connection, the one honest signal left."""
        self._spoiled = True
        if not self.answer.done():
            self.answer.set_exception(exc)
        elif self._head is not None and not self._head[1].is_eof():
            if not isinstance(exc, TimeoutError | ClientPayloadError):
                # SECURITY: a failure of the client's body after the answer started (413, 408,
                # bad framing) must not escape as an error answer of its own: written after
                # the answer's first bytes, it would be a second response on one connection.
                cause, exc = exc, ClientPayloadError(f"the exchange failed: {type(exc).__name__}")
                exc.__cause__ = cause
            self._head[1].set_exception(exc)
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        self._spoiled = True
        self._stop_timer()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        parser = self._response_parser  # None exactly when no exchange is in progress
        if parser is None:
            # SECURITY: bytes no request asked for: they would be read as the next client's
            # answer. The connection is closed instead.
            self.close(abort=True)
            return
        head = self._head
        if data:
            self.heard = True
            self._last = self._loop.time()
            if head is not None and head[1].is_eof():
                # SECURITY: bytes after the end of the answer (a second answer, a smuggled
                # one): the connection can no longer tell answers apart; never reused.
                self.close(abort=True)
                return
        try:
            messages, upgraded, _ = parser.feed_data(data)
        except HttpProcessingError as exc:
            self.fail(UpstreamLost(f"malformed answer: {exc.__class__.__name__}"))
            return
        for message, payload in messages:
            if head is not None or upgraded or message.code == 101 or message.code < 100:
                # SECURITY: a second answer to one request, or a protocol switch nobody asked
                # for: not relayed, and the connection is closed.
                self.fail(UpstreamLost("more than one answer"))
                return
            if message.code < 200:
                continue  # an interim answer (100, 103): the final one follows
            head = self._head = (message, payload)
            self.answer.set_result(head)
        if head is not None and head[1].is_eof() and not self._ended:
            self._ended = True
            try:
                started = parser.feed_eof() is not None  # the start of another message
            except HttpProcessingError:
                started = True
            if started:
                # SECURITY: bytes after the answer in the same read, a head not yet complete:
                # the parser would hold them unseen and the connection would look clean.
                self.close(abort=True)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._stop_timer()
        parser = self._response_parser
        if parser is None:  # no exchange in progress
            return
        head = self._head
        if head is None:
            if not self.answer.done():
                self.answer.set_exception(UpstreamLost("connection lost before the answer"))
            return
        payload = head[1]
        if payload.is_eof():
            return
        with contextlib.suppress(Exception):  # an answer cut short is reported below
            parser.feed_eof()  # an answer framed by the connection's end ends here
        if not payload.is_eof() and payload.exception() is None:
            payload.set_exception(ClientPayloadError("the upstream closed mid-answer"))

    def _check(self) -> None:
        """The read timeout, re-armed lazily: no timer is moved per read."""
        self._timer = None
        if self._response_parser is None or self.transport is None or self._ended:
            return  # idle, gone, or the answer is all here (a slow client is not a stall)
        now = self._loop.time()
        if self._reading_paused:
            self._last = now  # the client is slow to take the answer: not the upstream's stall
        writer = self.writer
        if writer is not None and not writer.done() and not self._paused:
            # SECURITY: the request's body is still coming from the client (the upstream takes
            # all it is sent): a client that stalls is its own 408 (limits.body_timeout), never
            # the upstream's 504.
            self._last = now
        due = self._last + self._read_timeout
        if now >= due:
            self.fail(TimeoutError(f"nothing from the upstream for {self._read_timeout} s"))
            return
        self._timer = self._loop.call_at(due, self._check)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
