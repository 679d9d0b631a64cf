"""The public listener's one handler: observe, guard, dispatch, render errors.

Every public request enters :func:`front_handler`'s coroutine once. It reads the current runtime
once (:data:`~gateway.runtime.REQUEST_RUNTIME`), gives the request an :class:`Exchange` and a
request id, sends it to the decision endpoint, the JWKS document or the proxy pipeline, renders
every error as the gateway's JSON (the one place besides the HTTP parser's, :mod:`gateway.
protocol`), and records one access line, one audit line (when someone was authenticated) and
the request metrics.

What used to be two middlewares (observe, errors), three routes and a response signal (CORS
and rate-limit headers, :func:`gateway.cors.edge_headers`) is one coroutine, so a request pays
for none of aiohttp's dispatch (docs/performance.md): :class:`gateway.protocol.GatewayRunner`
hands every request of the public listener straight to it (``FRONT``), and the app's one
catch-all route points at it too (test clients, and an app given middlewares of its own, as
the demo's). Paths are matched as aiohttp's router matched them (the decoded path), so nothing
moved from one route to another. ``Expect: 100-continue`` is answered by whoever first reads
the body (:func:`gateway.bodies.expect_continue`), once the request has been admitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.cors import edge_headers
from gateway.errors import GatewayError, HeadersTooLarge, InvalidRequest, NotFound
from gateway.exchange import EXCHANGE, Exchange
from gateway.forward.decision import decider, under
from gateway.forward.headers import request_id
from gateway.issue.endpoints import jwks
from gateway.observe import logs
from gateway.observe.lines import ExchangeFields
from gateway.observe.recent import RECENT as RECENT_AUDIT
from gateway.observe.tracing import RequestSpan
from gateway.pipeline import Endpoint, proxy
from gateway.protocol import Handler, header_bytes
from gateway.render import SERVER, error_response
from gateway.runtime import REQUEST_RUNTIME, Current, Runtime

_AIOHTTP_STATUS = {400: InvalidRequest, 404: NotFound}
JWKS_PATH = "/.well-known/jwks.json"
# The access line's status of a request cut off unanswered (its error: "shutdown"): nginx's
# 499 for a request that ended without an answer; not a 5xx the gateway answered.
CUT_OFF = 499

Route = Callable[[web.Request, Runtime, Exchange], Awaitable[web.StreamResponse]]


def front_handler(
    current: Current,
    endpoints: dict[str, Endpoint],
    decision_prefix: str | None,
    decision_proxy: str | None = None,
) -> Handler:
    """The handler of every public request. ``decision_prefix`` (None: decision mode off) and
    ``decision_proxy`` are listener-level settings, read once: a reload does not move routes."""

    decide = decider(decision_prefix, decision_proxy) if decision_prefix is not None else None

    def route(request: web.Request) -> Route:
        path = request.rel_url.path_safe
        if decide is not None and under(decision_prefix, path):
            return decide
        if path == JWKS_PATH and request.method in ("GET", "HEAD"):
            return jwks
        return proxied

    async def proxied(
        request: web.Request, runtime: Runtime, exchange: Exchange
    ) -> web.StreamResponse:
        return await proxy(
            request, runtime, exchange, endpoints, lambda response: _edge(request, response)
        )

    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = request[REQUEST_RUNTIME] = current.runtime
        # SECURITY: counted before anything awaits, so a reload cannot close this runtime's
        # pools under the request (a 500 "Session is closed" half-way through).
        runtime.requests.active += 1
        headers = request.headers
        settings = runtime.settings
        header = settings.headers.request_id
        exchange, span = begin(runtime, headers, request.method)
        request[EXCHANGE] = exchange
        status = 500
        try:
            try:
                if header_bytes(request.raw_headers) > runtime.max_header_bytes:
                    raise HeadersTooLarge(details={"limit": runtime.max_header_bytes})
                response = await route(request)(request, runtime, exchange)
            except GatewayError as error:
                response = _render(error, exchange, header)
            except web.HTTPException as exc:
                response = _render(
                    _AIOHTTP_STATUS.get(exc.status, GatewayError)(), exchange, header
                )
            except Exception:
                logs.EVENTS.exception(
                    "unhandled error",
                    extra={"fields": {"request_id": exchange.request_id, "route": exchange.route}},
                )
                response = _render(GatewayError(), exchange, header)
            if not response.prepared:
                _edge(request, response)
            if "Expect" in headers and response.status >= 400 and not request.content.is_eof():
                # SECURITY: refused before its body was invited (Expect: 100-continue): what
                # the client sends next on this connection could be that body or its next
                # request; the connection ends here instead of guessing, or taking the body in.
                response.force_close()
            if "Upgrade" in headers or request.method == "CONNECT":
                # The parser stops at an upgrade request (not passed through): what follows on
                # the connection is never read as requests, and would wait unanswered.
                response.force_close()
            status = response.status
            return response
        except asyncio.CancelledError:
            # Cut off by the drain at shutdown (the production listener's one canceller: it
            # leaves aiohttp's handler_cancellation off), whether its answer had begun or not.
            status = cut_off(exchange)
            raise
        finally:
            runtime.requests.active -= 1
            record(runtime, exchange, request.method, status, span)

    return handle


def _edge(request: web.Request, response: web.StreamResponse) -> None:
    """What every answer of the public listener carries before it is sent: the CORS and
    rate-limit headers (:func:`~gateway.cors.edge_headers`), and the gateway's ``Server``
    unless the upstream's answer brought its own."""
    edge_headers(request, response)
    response.headers.setdefault("Server", SERVER)


def begin(
    runtime: Runtime, headers: CIMultiDictProxy[str], method: str
) -> tuple[Exchange, RequestSpan]:
    """A request's exchange, with its request id (the client's when well-formed and not a
    secret, else a new one: :func:`~gateway.forward.headers.request_id`), and its span; for
    both listeners (this module's handler and :mod:`gateway.decision_server`)."""
    incoming = headers.get(runtime.settings.headers.request_id)
    if incoming is not None:
        incoming = request_id(incoming, next(_ids), headers.get("Authorization", ""))
        # SECURITY: a credential of a shape only the config knows (an opaque OAuth2 token of
        # introspection.token_pattern), someone else's, would be echoed and logged otherwise.
        if runtime.authenticators.configured_shape(incoming):
            incoming = None
    exchange = Exchange(next(_ids) if incoming is None else incoming, time.perf_counter())
    return exchange, runtime.tracer.request(
        headers, method, exchange.request_id, runtime.authenticators.configured_shape
    )


_BATCH = 64


def _request_ids() -> Iterator[str]:
    """New request ids: 128 random bits as 32 hex digits (the shape of a UUID's hex, without
    its version bits), from the fast non-cryptographic generator (an id correlates log lines
    and grants nothing; an ``os.urandom`` call per request showed in the profile), cut
    :data:`_BATCH` at a time from one draw: one call and one format per 64 requests."""
    while True:
        block = f"{random.getrandbits(128 * _BATCH):0{32 * _BATCH}x}"
        for start in range(0, 32 * _BATCH, 32):
            yield block[start : start + 32]


_ids = _request_ids()  # used on the event loop's thread only


def _new_ids_after_fork() -> None:
    """A worker forked from a process that drew ids must not repeat that draw's remaining
    ids (``random`` reseeds itself in the child; this drops what was drawn before)."""
    global _ids  # the generator is the module's one piece of state
    _ids = _request_ids()


os.register_at_fork(after_in_child=_new_ids_after_fork)


async def no_expectation(request: web.Request) -> None:
    """The router's expect handler: nothing, as on the served path; the body's first reader
    answers ``Expect: 100-continue`` (:func:`gateway.bodies.expect_continue`)."""


def _render(error: GatewayError, exchange: Exchange, header: str) -> web.Response:
    refused(error, exchange)
    response = error_response(error)
    response.headers[header] = exchange.request_id
    return response


def cut_off(exchange: Exchange) -> int:
    """Note a request cut off at shutdown before its answer was done, for both listeners: its
    error is ``shutdown`` and its status :data:`CUT_OFF` (returned), which :func:`record`
    counts as no decision."""
    exchange.error = "shutdown"
    return CUT_OFF


def refused(error: GatewayError, exchange: Exchange) -> None:
    """Note a request's error for its access line; a failure of the gateway's own (a 5xx other
    than a dependency being down) also gets a warning line."""
    exchange.error = error.code
    if error.status >= 500 and error.code != "service_unavailable":
        logs.event(
            "request failed",
            logging.WARNING,
            request_id=exchange.request_id,
            error=error.code,
            route=exchange.route,
            upstream=exchange.upstream or error.details.get("upstream"),
            cause=error.cause,
        )


def record(
    runtime: Runtime, exchange: Exchange, method: str, status: int, span: RequestSpan
) -> None:
    """The metrics, access line, audit line and span of one finished request: only what the
    pipeline established (route, credential kind, who), never a header or a credential. The
    lines leave here as one tuple of their fields (:func:`gateway.observe.logs.exchange`)."""
    elapsed = time.perf_counter() - exchange.started
    metrics = runtime.metrics
    credential = exchange.credential
    kind = credential.name if credential is not None else "none"
    route, error = exchange.route, exchange.error
    span.finish(status, route, kind, error)
    metrics.request_done(route, method, kind, status, elapsed)
    upstream_seconds = exchange.upstream_seconds
    if exchange.upstream is not None and upstream_seconds is not None:
        metrics.upstream_done(exchange.upstream, upstream_seconds)
    p = exchange.principal
    # An admitted request that failed later (its upstream, say) was allowed: see Exchange. One
    # cut off at shutdown before any decision was neither allowed nor denied: an error.
    outcome = "allow" if exchange.admitted else "error" if status == CUT_OFF else "deny"
    if exchange.credential_present:
        if exchange.admitted:
            metrics.auth_decision(kind, outcome, "ok")
        elif error is not None and status != CUT_OFF:  # (None, or cut off: no decision)
            metrics.auth_decision(kind, outcome, error)
    # SECURITY: a client chooses its method: folded to the known set before it is logged (a
    # key sent as the method must not reach the access or audit line).
    method = metrics.method_label(method)
    created = time.time()
    request_id = exchange.request_id
    if p is None:
        fields: ExchangeFields = (
            request_id, route, method, status, kind, None, None, None, error, elapsed,
            upstream_seconds, None, outcome,
        )  # fmt: skip
        logs.exchange(created, fields, False)
        return
    fields = (
        request_id, route, method, status, kind, p.account, p.user, p.actor, error, elapsed,
        upstream_seconds, p.key_id, outcome,
    )  # fmt: skip
    logs.exchange(created, fields, True)
    # The dashboard's window onto the latest audit lines: one tuple, no formatting.
    RECENT_AUDIT.append(
        (
            created,
            request_id,
            route,
            method,
            status,
            kind,
            p.account,
            p.user,
            p.actor,
            p.key_id,
            outcome,
        )
    )
