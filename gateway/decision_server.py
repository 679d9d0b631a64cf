"""The decision listener (``decision.listen``): forward auth on a port of its own.

A proxy in front (nginx ``auth_request``, ingress-nginx, Traefik, Envoy) asks before every
request it forwards, so a decision's cost is the gateway's cost per request. On the public
listener a decision pays for aiohttp's request and response objects (``web.Request``,
``web.Response``, its header multidict and writer), about 25 µs here: the floor of any aiohttp
handler (docs/performance.md). This listener parses requests with aiohttp's own C parser (the
limits and refusals of the public listener's) and writes each answer as the bytes
:func:`gateway.wire.answer` returns, with one ``write``.

The contract is the decision endpoint's (:mod:`gateway.forward.decision`): the same pipeline
(:func:`~gateway.forward.decision.admitted`), JSON errors, access and audit lines and
metrics (:func:`gateway.front.record`). Paths outside ``decision.prefix`` are 404. Limits:
``limits.max_header_bytes`` (431), ``limits.header_timeout`` (a connection without complete
request headers that long after opening or after its previous answer is closed), a request body
is read and dropped, up to ``limits.max_body_bytes`` (413 beyond, 408 after
``limits.body_timeout`` mid-body, 400 for a body cut short or framed wrongly, as on the public
listener; the connection closes). Answers go out in the order the
requests came (pipelining). A request the parser refuses is answered with the JSON 400 and the
connection closes, as on the public listener (:mod:`gateway.protocol`); so is an upgrade request
once answered. Not served here: CORS headers (no browser calls a forward-auth endpoint).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestPayloadError

from gateway import wire
from gateway.bodies import CLIENT_BODY_FAILURES, client_body_error
from gateway.config import Limits, Listener, Settings
from gateway.cors import rate_headers
from gateway.errors import (
    GatewayError,
    HeadersTooLarge,
    NotFound,
    PayloadTooLarge,
)
from gateway.exchange import Exchange
from gateway.forward.decision import admitted, admitted_at_once, answer_headers, under
from gateway.front import begin, cut_off, record, refused
from gateway.mutate.headers import IdentityHeaders
from gateway.observe import logs
from gateway.pipeline import use_at_once
from gateway.principal import Principal
from gateway.protocol import header_bytes, parser_limits, refusal, unserved
from gateway.render import error_body, error_headers
from gateway.runtime import Current, Runtime

# Requests parsed and not yet answered, per connection, before the connection stops being read.
MAX_QUEUED = 32
# Principals whose identity block is kept (each with its block, a few hundred bytes).
MAX_BLOCKS = 10_000
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_Parsed = tuple[RawRequestMessage | HttpProcessingError, StreamReader]


class DecisionServer:
    """The listener: accepts connections and answers their decision requests.

    Listener-level settings (prefix, proxy, the HTTP parser's limits, ``header_timeout``) are
    read once, as the public listener's are; the runtime (keys, policy, stores, and the limits
    the listener checks itself: header and body sizes, ``body_timeout``) is read per request
    from ``current``, so a reload applies."""

    def __init__(self, current: Current, settings: Settings) -> None:
        self.current = current
        self.prefix = settings.decision.prefix
        self.proxy = settings.decision.proxy
        self.limits: Limits = settings.limits  # the parser's and connections', from the start
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._identity = wire.HeaderBlocks()
        # id(principal) -> (the principal, the identity renderer, its block): see _identity_block.
        self._blocks: dict[int, tuple[Principal, IdentityHeaders, bytes]] = {}

    async def start(
        self, listener: Listener, ssl_context: ssl.SSLContext | None, reuse_port: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, loop),
            listener.host,
            listener.port,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
            # SECURITY: a handshake never finished holds its connection no longer than
            # header_timeout (asyncio's default is 60 s; header_timeout starts after it).
            ssl_handshake_timeout=self.limits.header_timeout if ssl_context else None,
        )

    @property
    def port(self) -> int:
        """The bound port (the one chosen when the config says 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def close(self, timeout: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer (which says
        ``Connection: close``); whatever is still busy after ``timeout`` is cut off."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        tasks = [task for c in list(self.connections) if (task := c.stop()) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for connection in list(self.connections):
            connection.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def answer(
        self, message: RawRequestMessage, payload: StreamReader, peer: str | None, conn: _Connection
    ) -> tuple[bytes, bool]:
        """The bytes answering one request, and whether the connection stays open after it.
        Never raises: every failure is an answer (a 500 for the gateway's own)."""
        keep_alive = not (message.should_close or message.upgrade or self.stopping)
        head = message.method == "HEAD"
        runtime = self.current.runtime
        # SECURITY: counted before anything awaits, so a reload cannot close this runtime's
        # resources under the request.
        runtime.requests.active += 1
        headers = message.headers
        header = runtime.settings.headers.request_id
        exchange, span = begin(runtime, headers, message.method)
        status = 500
        try:
            try:
                if payload is not EMPTY_PAYLOAD:
                    # Read (and dropped) whatever the answer: the connection then stays in step.
                    await self._drop_body(runtime, message, payload, conn)
                if (refused_here := self._refusal(runtime, message)) is not None:
                    raise refused_here
                principal = await admitted(
                    runtime,
                    exchange,
                    headers,
                    message.method,
                    message.path,
                    peer,
                    self.prefix,
                    self.proxy,
                )
                keep_alive = keep_alive and not self.stopping  # a shutdown began meanwhile
                data = self._allowed(runtime, exchange, principal, keep_alive, message)
                status = 200
            except GatewayError as error:
                keep_alive = keep_alive and not self.stopping
                data, keep_alive = _error(error, exchange, header, keep_alive, message, head)
                status = error.status
            except Exception:
                data, keep_alive = _unhandled(exchange, header, message)
            return data, keep_alive
        except asyncio.CancelledError:
            # Cut off by close() after its timeout: logged and counted as the public
            # listener's cut-offs are, not as a 500 answered.
            status = cut_off(exchange)
            raise
        finally:
            runtime.requests.active -= 1
            record(runtime, exchange, message.method, status, span)

    def answer_at_once(
        self, message: RawRequestMessage, peer: str | None
    ) -> tuple[bytes, bool] | None:
        """:meth:`answer` for a request whose answer needs nothing awaited: a body-less request
        within the limits, under the prefix, whose decision is reused and settled in memory
        (:func:`~gateway.forward.decision.admitted_at_once`); ``None`` for every other, which
        :meth:`answer` then answers as if this had not run. The same bytes, lines and metrics
        as :meth:`answer`'s, without the connection's task, a coroutine or a future: most of a
        proxy's questions are this one, asked again."""
        if self.stopping or message.upgrade:
            return None
        runtime = self.current.runtime
        if self._refusal(runtime, message) is not None:
            return None  # the awaited path answers the listener's own refusals
        headers = message.headers
        try:
            decided = admitted_at_once(
                runtime, headers, message.method, message.path, peer, self.prefix, self.proxy
            )
        except Exception:
            # A bug, not a client: logged, and the request left to the awaited path (which
            # answers whatever it is as it answers every failure of the gateway's own).
            logs.EVENTS.exception("decision listener: deciding at once failed")
            return None
        if decided is None:
            return None
        # From here the decision is used: counted, logged, answered (a 500 if that fails).
        exchange, span = begin(runtime, headers, message.method)
        principal, match = decided
        use_at_once(runtime, exchange, principal, match)
        keep_alive = not message.should_close
        try:
            data = self._allowed(runtime, exchange, principal, keep_alive, message)
            status = 200
        except Exception:
            data, keep_alive = _unhandled(exchange, runtime.settings.headers.request_id, message)
            status = 500
        record(runtime, exchange, message.method, status, span)
        return data, keep_alive

    def _refusal(self, runtime: Runtime, message: RawRequestMessage) -> GatewayError | None:
        """The listener's own refusal of a request, before any credential is read: headers
        over ``limits.max_header_bytes`` (431), a path outside the prefix (404). ``runtime``:
        the request's, read once (a reload meanwhile does not mix two configs in it)."""
        limit = runtime.max_header_bytes
        if header_bytes(message.raw_headers) > limit:
            return HeadersTooLarge(details={"limit": limit})
        if not under(self.prefix, message.path.partition("?")[0]):
            return NotFound()
        return None

    def _allowed(
        self,
        runtime: Runtime,
        exchange: Exchange,
        principal: Principal,
        keep_alive: bool,
        message: RawRequestMessage,
    ) -> bytes:
        """The answer of an allowed decision: 200, the identity headers, the request id (and
        the assertion, the rate-limit headers when the exchange has them)."""
        block = self._identity_block(runtime, principal)
        if runtime.assertions is None and exchange.rate is None:
            return wire.allowed(
                block,
                runtime.settings.headers.request_id,
                exchange.request_id,
                keep_alive=keep_alive,
                http10=_http10(message),
            )
        out = answer_headers(runtime, exchange, principal)
        if exchange.rate is not None:
            out.extend(rate_headers(exchange.rate).items())
        return wire.answer(
            200,
            out,
            keep_alive=keep_alive,
            http10=_http10(message),
            block=block,
        )

    def _identity_block(self, runtime: Runtime, principal: Principal) -> bytes:
        """The principal's identity header lines (``runtime.identity``), encoded and checked
        (:class:`~gateway.wire.HeaderBlocks`). A reused decision hands out the same principal
        object on every hit, so the block is kept per object, found by its id without hashing
        the principal (ten fields) and the rendered headers again. The entry holds the object,
        so no other can take its id while it is kept, and is used only for that very object
        and renderer (a reload brings another)."""
        identity = runtime.identity
        kept = self._blocks.get(id(principal))
        if kept is not None and kept[0] is principal and kept[1] is identity:
            return kept[2]
        block = self._identity(identity.render(principal))
        if len(self._blocks) >= MAX_BLOCKS:
            self._blocks.clear()
        self._blocks[id(principal)] = (principal, identity, block)
        return block

    async def _drop_body(
        self,
        runtime: Runtime,
        message: RawRequestMessage,
        payload: StreamReader,
        conn: _Connection,
    ) -> None:
        """Read a decision request's body and drop it (a decision never looks at a body)."""
        limits = runtime.settings.limits
        close = {"Connection": "close"}
        length = message.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise PayloadTooLarge(details={"limit": limits.max_body_bytes}, headers=close)
        if message.version >= (1, 1) and message.headers.get("Expect", "").lower() == (
            "100-continue"
        ):
            conn.write(_CONTINUE)
        seen = 0
        while True:
            try:
                # SECURITY: a client that stalls mid-body is cut off; it cannot hold the
                # connection (and the requests pipelined behind it) indefinitely.
                chunk = await asyncio.wait_for(payload.readany(), limits.body_timeout)
            except CLIENT_BODY_FAILURES as failure:
                # The public listener's answers (gateway.bodies): 408 for a stall, 400 for a
                # body cut short (the client hung up) or framed wrongly; never a 500.
                raise client_body_error(failure) from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > limits.max_body_bytes:
                raise PayloadTooLarge(details={"limit": limits.max_body_bytes}, headers=close)


def _http10(message: RawRequestMessage) -> bool:
    return message.version < (1, 1)


def _unhandled(exchange: Exchange, header: str, message: RawRequestMessage) -> tuple[bytes, bool]:
    """The 500 answering a failure of the gateway's own (logged); the connection closes."""
    logs.EVENTS.exception(
        "unhandled error",
        extra={"fields": {"request_id": exchange.request_id, "route": exchange.route}},
    )
    return _error(GatewayError(), exchange, header, False, message, message.method == "HEAD")


def _error(
    error: GatewayError,
    exchange: Exchange,
    header: str,
    keep_alive: bool,
    message: RawRequestMessage,
    head: bool,
) -> tuple[bytes, bool]:
    refused(error, exchange)
    headers = error_headers(error)
    if headers.pop("Connection", "").lower() == "close":
        keep_alive = False
    if exchange.rate is not None:
        headers.update(rate_headers(exchange.rate))
    headers["Content-Type"] = "application/json"
    headers[header] = exchange.request_id
    body = error_body(error)
    data = wire.answer(
        error.status,
        headers.items(),
        body,
        keep_alive=keep_alive,
        http10=_http10(message),
    )
    if head:
        data = data[: len(data) - len(body)]
    return data, keep_alive


class _Connection(BaseProtocol):
    """One client connection: parses requests as they arrive, answers them in order from one
    task, closes an idle connection after ``limits.header_timeout``."""

    def __init__(self, server: DecisionServer, loop: asyncio.AbstractEventLoop) -> None:
        parser = HttpRequestParser(
            self,
            loop,
            2**16,
            **parser_limits(server.limits),
            payload_exception=RequestPayloadError,
            auto_decompress=False,
            # SECURITY: the parser stops after this many unanswered requests (the rest of the
            # read stays bytes until answers drain): one read of tiny pipelined requests cannot
            # become thousands of parsed messages held per connection.
            max_msg_queue_size=MAX_QUEUED,
        )
        super().__init__(loop, parser)
        self._request_parser = parser
        self._server = server
        self._queue: deque[_Parsed] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._peer: str | None = None
        self._idle_since: float | None = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._done_reading = False  # nothing more is parsed: the connection ends after answers
        self._closing = False  # shutting down: close after the answer in progress
        self._body: StreamReader | None = None  # the body of the request being answered
        self._held = False  # the parser holds back requests while the task answers (_parsed)
        # Answers given at once, written together once this turn of the loop has read what
        # it read (_flush), then whether the connection ends after them.
        self._pending: list[bytes] = []
        self._pending_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        self._server.connections.add(self)
        self._timer = self._loop.call_later(self._server.limits.header_timeout, self._idle_check)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)
        self._done_reading = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
        body = self._body
        if body is not None and not body.is_eof():
            body.set_exception(ConnectionResetError("connection lost"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        while self._parsed(data):
            data = b""  # the parser stopped at MAX_QUEUED, all answered at once: parse on

    def _parsed(self, data: bytes) -> bool:
        """Parse what arrived and answer or queue it; True when the parser stopped at its bound
        of unanswered requests and every one was answered at once, so that what it held back
        must be parsed now (nothing else would ask for it)."""
        if self._done_reading:
            return False
        parsed: Sequence[_Parsed]
        try:
            parsed, upgraded, _ = self._request_parser.feed_data(data)
        except HttpProcessingError as exc:
            parsed, upgraded = [(exc, EMPTY_PAYLOAD)], True
            body = self._body
            if body is not None and not body.is_eof():
                # SECURITY: the C parser drops the body stream of the request being answered
                # on a framing error (a bad chunk size) without failing it: failed here, the
                # answer is a 400 at once, not a wait for limits.body_timeout.
                body.set_exception(RequestPayloadError("malformed body framing"))
        for i, (message, _) in enumerate(parsed):
            if (refused := unserved(message)) is not None:
                # Answered as bytes the parser refused; nothing after it is read.
                parsed, upgraded = [*parsed[:i], (refused, EMPTY_PAYLOAD)], True
                break
        if upgraded:
            # Whatever follows an upgrade request (or bytes the parser refused) is not HTTP.
            self._done_reading = True
        if not parsed:
            return False
        if not self._queue and (self._task is None or self._waiter is not None):
            # Nothing before them waits for an answer: what can be answered at once is, in
            # order, until one cannot (it and the rest go to the task, still in order).
            held = len(parsed) >= MAX_QUEUED
            parsed = self._answer_at_once(parsed)
            if not parsed:
                return held
            # SECURITY: the parser may hold back the rest of the read, and the queue may stay
            # short of the bound that pauses reading: the task parses on as it drains, so no
            # request is left unanswered in the parser (or read without limit).
            self._held = held
        self._queue.extend(parsed)
        self._idle_since = None
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake()
        if len(self._queue) >= MAX_QUEUED and not self._buffer_paused:
            self._pause_reading_for_buffer()
        return False

    def _answer_at_once(self, parsed: Sequence[_Parsed]) -> Sequence[_Parsed]:
        """Answer the leading requests of ``parsed`` that :meth:`DecisionServer.answer_at_once`
        can; return the rest (from the first it cannot).

        The answers are not written here but by :meth:`_flush`, scheduled for after this turn
        of the event loop has read from every connection ready, as the connection's task
        would write them: written from inside each read, answers go out one loop turn at a
        time, the proxy's next requests arrive spread over more turns, and the gateway spends
        more of its CPU waiting for and reading them than the shortcut saves (measured:
        docs/performance.md, fifth round)."""
        server = self._server
        pending = self._pending
        for i, (message, payload) in enumerate(parsed):
            # SECURITY: answers not yet written are bounded per connection as queued requests
            # are: a flood of tiny pipelined requests whose answers are never read cannot make
            # the gateway hold more than MAX_QUEUED of them unwritten.
            if len(pending) >= MAX_QUEUED:
                return parsed[i:]
            if (
                self.transport is None
                or self._closing
                or self._paused
                or payload is not EMPTY_PAYLOAD
                or isinstance(message, HttpProcessingError)
            ):
                return parsed[i:]
            try:
                answered = server.answer_at_once(message, self._peer)
            except Exception:
                # A bug after the decision was used (counted, logged): not answered twice;
                # the connection is cut, as the task cuts it for a bug of its own.
                logs.EVENTS.exception("decision listener connection failed")
                self._done_reading = True
                self.abort()
                return ()
            if answered is None:
                return parsed[i:]
            data, keep_alive = answered
            self._request_parser.message_consumed()
            if not pending:
                self._loop.call_soon(self._flush)
            pending.append(data)
            if not keep_alive:
                self._done_reading = True  # nothing after this request is read
                self._pending_close = True
                return ()
        self._idle_since = self._loop.time()
        return ()

    def _flush(self) -> None:
        """Write the answers given at once, in one write; then close if the last said so.
        Runs before anything the connection's task writes after them (scheduled first)."""
        pending, self._pending = self._pending, []
        transport = self.transport
        if transport is None or not pending:
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._pending_close:
            self._linger(transport)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def stop(self) -> asyncio.Task[None] | None:
        """No more requests: an idle connection closes now, a busy one after its answer (its
        body still read)."""
        self._closing = True
        if self._task is None or self._task.done() or self._waiter is not None:
            self._flush()  # answers given at once and not yet written go out first
            if self.transport is not None:
                self.transport.close()
            return None
        return self._task

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _idle_check(self) -> None:
        now = self._loop.time()
        since = self._idle_since
        timeout = self._server.limits.header_timeout
        if since is not None and now - since >= timeout and self.transport is not None:
            if self.transport.get_write_buffer_size():
                # SECURITY: answers the client has not read all this time: cut off (closing
                # would wait for them to be read, holding the connection for as long).
                self.abort()
                return
            # SECURITY: no complete request headers within limits.header_timeout of opening or
            # of the previous answer: closed (no slowloris holding connections open).
            self.transport.close()
            return
        self._timer = self._loop.call_at(
            (since if since is not None else now) + timeout, self._idle_check
        )

    async def _serve(self) -> None:
        try:
            await self._answer_in_order()
        except ConnectionError:
            self.abort()
        except Exception:
            # A bug, not a client: logged, and the connection cut rather than left hanging.
            logs.EVENTS.exception("decision listener connection failed")
            self.abort()

    async def _answer_in_order(self) -> None:
        server = self._server
        timeout = server.limits.header_timeout
        while True:
            while self._queue:
                message, payload = self._queue.popleft()
                self._request_parser.message_consumed()
                if (self._buffer_paused or self._held) and len(self._queue) <= MAX_QUEUED // 2:
                    if self._buffer_paused:
                        self._resume_reading_for_buffer()
                    self._held = False
                    self.data_received(b"")  # what the parser held back while the queue was full
                if isinstance(message, HttpProcessingError):
                    error = refusal(400, message)
                    data = wire.answer(
                        error.status,
                        [("Content-Type", "application/json")],
                        error_body(error),
                        keep_alive=False,
                    )
                    keep_alive = False
                else:
                    self._body = payload
                    try:
                        data, keep_alive = await server.answer(message, payload, self._peer, self)
                    finally:
                        self._body = None
                transport = self.transport
                if transport is None:
                    return
                transport.write(data)
                if not keep_alive or self._closing:
                    self._linger(transport)
                    return
                if self._paused:
                    try:
                        # SECURITY: a client that stops reading its answers is cut off after
                        # limits.header_timeout instead of holding the connection forever.
                        await asyncio.wait_for(self._drain_helper(), timeout)
                    except TimeoutError:
                        self.abort()
                        return
            if self._done_reading or self._closing or self.transport is None:
                if self.transport is not None:
                    self._linger(self.transport)
                return
            self._idle_since = self._loop.time()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after the last answer. Bytes the client may still be sending are read and
        dropped for a moment first: closing with unread input makes the kernel reset the
        connection, which can destroy the answer before the client reads it."""
        self._done_reading = True
        self._queue.clear()
        self._resume_transport_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(min(2.0, self._server.limits.body_timeout), transport.close)
