"""The gateway's answer to bytes that aiohttp's HTTP parser refuses.

A request whose request line, headers or chunk framing cannot be parsed never reaches the app:
aiohttp answers it from ``RequestHandler.handle_error``, which logs a plain-text traceback that
quotes the raw line (an ``Authorization`` header with its key, say) and answers ``text/plain``
with the same quote, or a 500 when the quote cannot be encoded. :class:`GatewayRunner` serves the
app through a request handler that answers those requests like every other error instead: the
gateway's JSON body (:func:`gateway.render.error_response`), a 4xx status for anything a client
sent, the connection closed, and one JSON log line naming only the exception's type and its
first line, redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypedDict, cast

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import (
    BadHttpMessage,
    HttpProcessingError,
    InvalidURLError,
    TransferEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import _ErrInfo
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import Limits
from gateway.errors import GatewayError, InvalidRequest, UpstreamTimeout
from gateway.observe import logs
from gateway.observe.redact import redact
from gateway.render import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The one handler of an app (gateway.front) that GatewayRunner serves without aiohttp's router.
FRONT: web.AppKey[Handler] = web.AppKey("front")


class ParserLimits(TypedDict):
    max_field_size: int
    max_line_size: int
    max_headers: int


def parser_limits(limits: Limits) -> ParserLimits:
    """aiohttp's HTTP parser limits, for both listeners (the public app's ``handler_args``,
    :func:`gateway.app.server_limits`, and :mod:`gateway.decision_server`): four times the
    gateway's own, so that a request whose headers pass ``limits.max_header_bytes`` gets the
    gateway's JSON 431, and one far beyond it is cut off by the parser itself (a plain 400)
    before it is ever buffered whole."""
    limit = limits.max_header_bytes * 4
    return ParserLimits(max_field_size=limit, max_line_size=limit, max_headers=128)


_SEPARATOR, _LINES = b": ".join, b"\r\n".join


def header_bytes(raw: Sequence[tuple[bytes, bytes]]) -> int:
    """The size ``limits.max_header_bytes`` bounds, for both listeners: each header line as
    ``Name: value\\r\\n`` (the request line and the blank line not counted), measured with
    two joins in C rather than a sum of lengths in Python (two thirds of the time; every
    request pays it)."""
    return len(_LINES(map(_SEPARATOR, raw))) + 2 if raw else 0


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, redacted: aiohttp quotes the raw bytes on the
    following lines."""
    # SECURITY: the pure-Python parser's message for an invalid request target, or for a
    # chunk-size line that is not hex, is nothing but the client's bytes: named, never quoted.
    if isinstance(exc, InvalidURLError | TransferEncodingError):
        return type(exc).__name__
    text = str(getattr(exc, "message", None) or exc).strip().partition("\n")[0]
    # SECURITY: only the message's words: from the first quote or colon on, aiohttp quotes the
    # client's bytes (with the pure-Python parser on the first line too).
    for stop in ("'", '"', ":"):
        text = text.partition(stop)[0]
    return redact(text)[:200]


def _error_for(status: int, exc: BaseException | None) -> GatewayError:
    if _client_fault(exc) or 400 <= status < 500:
        return InvalidRequest(
            "The request could not be parsed as HTTP/1.1.", details={"reason": "malformed_http"}
        )
    if status == 504:
        return UpstreamTimeout()
    return GatewayError()


def refusal(status: int, exc: BaseException | None) -> GatewayError:
    """The error a request is answered with when it failed outside the handler (the HTTP
    parser refused it, most often), logged as one line; for both listeners (this module's and
    :mod:`gateway.decision_server`)."""
    error = _error_for(status, exc)
    # SECURITY: neither the exception's text nor aiohttp's message (both quote the raw
    # bytes, credentials included) is logged unredacted or echoed to the client.
    logs.event(
        "request refused by the HTTP parser"
        if error.status < 500
        else "request failed outside the app",
        logging.INFO if error.status < 500 else logging.ERROR,
        exc_type=type(exc).__name__ if exc is not None else None,
        reason=_first_line(exc) if exc is not None else None,
        status=error.status,
    )
    return error


def _client_fault(exc: BaseException | None) -> bool:
    return isinstance(exc, HttpProcessingError | web.RequestPayloadError)


# The versions served. aiohttp's C parser reads a request line without a version as HTTP/0.9
# (with the headers that follow) and passes HTTP/2.0 on; its pure-Python one any digits.
SERVED_VERSIONS = frozenset({HttpVersion10, HttpVersion11})


def unserved(message: object) -> BadHttpMessage | None:
    """The parser error a request of a version the gateway does not serve is answered as (the
    JSON 400 ``malformed_http``, the connection closed); ``None`` for any other message."""
    if isinstance(message, RawRequestMessage) and message.version not in SERVED_VERSIONS:
        # SECURITY: a request line the gateway reads one way and a backend or a proxy in front
        # another is refused, not judged (its answer's status line was "HTTP/0.9 200").
        return BadHttpMessage("HTTP version not served")
    return None


def _unmet(message: RawRequestMessage) -> bool:
    """An ``Expect`` other than ``100-continue``: ignored, as RFC 9110 §10.1.1 lets a server
    do (the public listener's handler never reads one; aiohttp's router, on the admin
    listener, answered it with a plain-text 417 that echoed it, before any middleware)."""
    expect = message.headers.get("Expect")
    return expect is not None and expect.lower() != "100-continue"


def _without_expectation(message: RawRequestMessage) -> RawRequestMessage:
    """``message`` without its ``Expect`` headers: names and values kept as parsed (a value
    that is not UTF-8 stays as it came; re-encoding it raised)."""
    headers = CIMultiDict((k, v) for k, v in message.headers.items() if k.lower() != "expect")
    raw = tuple((k, v) for k, v in message.raw_headers if k.lower() != b"expect")
    return message._replace(headers=CIMultiDictProxy(headers), raw_headers=raw)


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's protocol handler with the gateway's error answer (see the module docstring)."""

    def data_received(self, data: bytes) -> None:
        """As aiohttp's, and: when the C parser refuses the framing of the body of the request
        being handled (a bad chunk size), the error reaches that request's body too.

        aiohttp's C parser drops the body stream on such an error and queues the error as the
        next message, so the handler waiting for the rest of the body would wait until
        ``limits.body_timeout``; the pure-Python parser already fails the stream.
        """
        queued = len(self._messages)
        super().data_received(data)
        for i in range(queued, len(self._messages)):
            message, payload = self._messages[i]
            refused = unserved(message)
            if refused is not None:
                self._messages[i] = (_ErrInfo(400, refused, refused.message), EMPTY_PAYLOAD)
            elif isinstance(message, RawRequestMessage) and _unmet(message):
                self._messages[i] = (_without_expectation(message), payload)
        if len(self._messages) > queued and self._current_request is not None:
            message = self._messages[-1][0]
            content = self._current_request.content
            if isinstance(message, _ErrInfo) and not content.is_eof():
                # SECURITY: the handler stops reading at once; nothing more is forwarded.
                content.set_exception(web.RequestPayloadError(message.message))

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """As aiohttp's, with its bound kept: the request in progress gets ``timeout`` to finish
        and is then cancelled. aiohttp waits ``timeout``, cancels only the request's body, then
        waits as long again for the handler, so a request waiting on its upstream (not its
        body) ran on for up to twice the drain the operator was promised (docs/operations.md:
        30 s), past a Kubernetes grace period sized for it."""
        cutoff = None
        if timeout is not None and self._task_handler is not None:
            cutoff = self._loop.call_later(timeout, self._cut_off)
        try:
            await super().shutdown(timeout)
        finally:
            if cutoff is not None:
                cutoff.cancel()

    def _cut_off(self) -> None:
        task = self._task_handler
        if task is not None and not task.done():
            task.cancel()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A malformed body surfacing after the answer (aiohttp drains what is left) is the
        client's fault: one info line, not an error with a traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, BaseException) and _client_fault(exc):
            logs.event(
                "request body refused by the HTTP parser",
                exc_type=type(exc).__name__,
                reason=_first_line(exc),
            )
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = refusal(status, exc)
        if request.writer.output_size > 0:
            # Part of a response is already on the wire: the connection is all that can go.
            raise ConnectionError("response already started; closing the connection")
        response = error_response(error)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections use :class:`GatewayRequestHandler`.

    aiohttp builds its ``Server`` inside the runner; this takes the server it built (its
    request factory and limits) and serves the same with the gateway's protocol class. An app
    that names its one handler (``FRONT``, :mod:`gateway.front`) and has no middleware is served
    by that handler directly, without aiohttp's router and signals.
    """

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()
        app = self.app
        handler = built.request_handler
        if FRONT in app and not app.middlewares:
            # Its request factory is the app's: every request is a web.Request.
            handler = cast(Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], app[FRONT])
        return _Server(
            handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=built._loop,
            **built._kwargs,
        )
