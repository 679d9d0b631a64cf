"""Proxy mode: stream the request to the upstream and the answer back.

Bodies are streamed in both directions and never buffered whole. Errors before the upstream's
answer starts become 502/504/413 JSON; a failure after the answer started aborts the client's
connection, so a client never sees a clean, complete-looking response with a truncated body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.bodies import CLIENT_BODY_FAILURES, client_body_error, expect_continue
from gateway.config import Settings, Upstream
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.exchange import Exchange
from gateway.forward import headers as hdrs
from gateway.forward.upstream import Answer, ConnectTimeout, UpstreamLost, framing
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import ERROR_TYPE, NOOP_TRACER, STATUS, Span, Tracer
from gateway.pools import UpstreamPools

CHUNK = 64 * 1024


class _BodyError(Exception):
    """Raised inside the body stream: the client's body failed (too large, too slow, broken
    framing), not the upstream. Carries the answer the client gets."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.code)
        self.error = error


class Forwarder:
    """Forwards admitted requests to the upstreams, each in a ``gateway.upstream`` span of
    ``tracer`` whose context is the ``traceparent`` the upstream receives (with tracing off, a
    client's ``traceparent``/``tracestate`` pass through like any other header)."""

    def __init__(
        self,
        settings: Settings,
        pools: UpstreamPools,
        metrics: Metrics,
        tracer: Tracer = NOOP_TRACER,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tracer = tracer
        self.pools = pools
        self._owned = frozenset(hdrs.canonical(h) for h in settings.headers.identity())
        self._max_body = settings.limits.max_body_bytes
        self._in_flight: dict[str, int] = {}
        self._urls = {name: u.url for name, u in settings.upstreams.items()}

    @property
    def in_flight(self) -> int:
        """Requests on this forwarder's pools now: forwarded ones and :meth:`lease` holders.
        Once a reload has replaced the forwarder nothing new starts on it, so when this reaches
        zero its pools can be closed without cutting anyone off."""
        return sum(self._in_flight.values())

    @contextmanager
    def lease(self, upstream: str) -> Iterator[aiohttp.ClientSession]:
        """The pool of ``upstream``, counted in :attr:`in_flight` while held (for the gateway's
        own calls to the upstream, such as the membership check before issuing a token)."""
        self._in_flight[upstream] = self._in_flight.get(upstream, 0) + 1
        try:
            yield self.pools.client(upstream)
        finally:
            self._in_flight[upstream] -= 1

    async def forward(
        self,
        request: web.Request,
        upstream: Upstream,
        identity: tuple[tuple[str, str], ...],
        exchange: Exchange,
        before_start: Callable[[web.StreamResponse], None] | None = None,
    ) -> web.StreamResponse:
        """Forward ``request`` with the ``identity`` headers and stream the answer back;
        ``before_start`` gets the answer's headers last, just before they are sent. The
        upstream's time is noted in ``exchange.upstream_seconds``."""
        settings = self._settings
        request_id = exchange.request_id
        out = hdrs.request_headers(
            request.headers,
            owned=self._owned,
            forward_authorization=settings.forward_authorization,
            trust_forwarded=settings.trust_forwarded,
        )
        peer = request.remote or ""
        if settings.trust_forwarded and (prior := request.headers.get("X-Forwarded-For")):
            peer = f"{prior}, {peer}"
        out["X-Forwarded-For"] = peer
        out["X-Forwarded-Proto"] = request.scheme
        if (host := hdrs.forwarded_host(request.host)) is not None:
            out["X-Forwarded-Host"] = host
        out[settings.headers.request_id] = request_id
        out.extend(identity)

        coding = request.headers.get("Transfer-Encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            # aiohttp's parser takes ``gzip, chunked`` and removes only the chunking: the
            # upstream would get gzip's bytes as the body, with nothing to say they are.
            raise InvalidRequest(
                "Only the chunked transfer coding is accepted (send a Content-Encoding instead).",
                details={"reason": "transfer_encoding"},
                headers={"Connection": "close"},
            )
        length = request.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLarge(details={"limit": self._max_body})
        if length is not None:
            out["Content-Length"] = str(length)
        in_flight = self._in_flight.get(upstream.name, 0)
        if in_flight >= upstream.max_in_flight:
            # SECURITY: shed load fast instead of queueing without bound behind a slow upstream.
            self._metrics.upstream_errors.labels(upstream.name, "shed").inc()
            raise ServiceUnavailable(
                "The upstream is at its concurrency limit. Retry later.",
                details={"reason": "overloaded"},
                headers={"Retry-After": "1"},
            )
        self._in_flight[upstream.name] = in_flight + 1
        try:
            return await self._exchange(request, upstream, out, exchange, before_start)
        finally:
            self._in_flight[upstream.name] -= 1

    async def _exchange(
        self,
        request: web.Request,
        upstream: Upstream,
        out: CIMultiDict[str],
        exchange: Exchange,
        before_start: Callable[[web.StreamResponse], None] | None,
    ) -> web.StreamResponse:
        client = self.pools.forwarding(upstream.name)
        method = request.method
        body = self._body(request) if request.body_exists else None
        line, chunked = framing(method, body is not None, "Content-Length" in out)
        with self._tracer.upstream(upstream.name, method, self._urls[upstream.name], out) as span:
            head = hdrs.request_head(method, request.raw_path, client.host_line + line, out)
            started = time.perf_counter()
            try:
                answer = await client.exchange(method, head, body, chunked)
            except _BodyError as exc:
                raise exc.error from None
            except ConnectTimeout as exc:
                self._metrics.upstream_errors.labels(upstream.name, "unavailable").inc()
                raise UpstreamUnavailable(
                    details={"upstream": upstream.name}, cause=str(exc)
                ) from None
            except TimeoutError:
                self._metrics.upstream_errors.labels(upstream.name, "timeout").inc()
                raise UpstreamTimeout(
                    details={"upstream": upstream.name}, cause="no answer within read_timeout"
                ) from None
            except UpstreamLost as exc:
                self._metrics.upstream_errors.labels(upstream.name, "unavailable").inc()
                # The gateway's own words (forward/connection.py), never the upstream's bytes.
                raise UpstreamUnavailable(
                    details={"upstream": upstream.name}, cause=str(exc)
                ) from None
            span.set(STATUS, answer.status)
            try:
                return await self._relay(
                    request, answer, exchange.request_id, upstream.name, span, before_start
                )
            finally:
                await answer.close()
                exchange.upstream_seconds = time.perf_counter() - started

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        # SECURITY: the body is invited (Expect: 100-continue) only now, once the request was
        # admitted and the upstream took its head; a refused request never invites it.
        await expect_continue(request)
        seen = 0
        timeout = self._settings.limits.body_timeout
        while True:
            try:
                # SECURITY: a client that stalls mid-body is cut off; it cannot hold an
                # upstream connection open indefinitely.
                chunk = await asyncio.wait_for(request.content.read(CHUNK), timeout)
            except CLIENT_BODY_FAILURES as failure:
                # Given up (a stall), gone (a hang-up: the exchange ends now instead of holding
                # the upstream connection until its read timeout) or misframed: the client's.
                raise _BodyError(client_body_error(failure)) from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > self._max_body:
                raise _BodyError(PayloadTooLarge(details={"limit": self._max_body}))
            yield chunk

    async def _relay(
        self,
        request: web.Request,
        upstream: Answer,
        request_id: str,
        upstream_name: str,
        span: Span,
        before_start: Callable[[web.StreamResponse], None] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in hdrs.response_headers(upstream.headers):
            response.headers.add(name, value)
        response.headers[self._settings.headers.request_id] = request_id
        if before_start is not None:
            before_start(response)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError, _BodyError):
            # The answer has started: the only honest signal left is to abort the connection.
            self._metrics.upstream_errors.labels(upstream_name, "aborted").inc()
            span.set(ERROR_TYPE, "aborted")
            if request.transport is not None:
                request.transport.abort()
            response.force_close()
        return response
