"""The public app's middlewares, as small factories (aiohttp's own style).

The outermost reads the current runtime once per request (:data:`~gateway.runtime.
REQUEST_RUNTIME`); everything after it uses that one."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import GatewayError, HeadersTooLarge, InvalidRequest, NotFound
from gateway.exchange import EXCHANGE, Exchange
from gateway.forward.headers import request_id
from gateway.forward.proxy import new_request_id
from gateway.observe import logs
from gateway.observe.recent import RECENT as RECENT_AUDIT
from gateway.render import error_response
from gateway.runtime import REQUEST_RUNTIME, Current

_AIOHTTP_STATUS = {400: InvalidRequest, 404: NotFound}


def observe_middleware(current: Current) -> Middleware:
    """Outermost: gives every request an :class:`Exchange` and a request id, then records one
    access line, one audit line (when someone was authenticated) and the request metrics. The
    request's span (:mod:`gateway.observe.tracing`) is current from here to the last byte."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        runtime = request[REQUEST_RUNTIME] = current.runtime
        # SECURITY: counted before anything awaits, so a reload cannot close this runtime's
        # pools under the request (a 500 "Session is closed" half-way through).
        runtime.requests.active += 1
        metrics = runtime.metrics
        header = runtime.settings.headers.request_id
        exchange = Exchange(
            request_id(
                request.headers.get(header),
                new_request_id(),
                request.headers.get("Authorization", ""),
            ),
            time.perf_counter(),
        )
        request[EXCHANGE] = exchange
        span = runtime.tracer.request(request.headers, request.method, exchange.request_id)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            runtime.requests.active -= 1
            elapsed = time.perf_counter() - exchange.started
            kind = exchange.credential.value if exchange.credential else "none"
            span.finish(status, exchange.route, kind, exchange.error)
            metrics.request_done(exchange.route, request.method, kind, status, elapsed)
            if exchange.upstream is not None and "upstream" in exchange.timings:
                metrics.upstream_done(exchange.upstream, exchange.timings["upstream"])
            p = exchange.principal
            outcome = "allow" if exchange.error is None else "deny"
            if exchange.credential_present:
                metrics.auth_decision(kind, outcome, exchange.error or "ok")
            # SECURITY: a client chooses its method: folded to the known set before it is
            # logged (a key sent as the method must not reach the access or audit line).
            method = metrics.method_label(request.method)
            logs.access(
                request_id=exchange.request_id,
                route=exchange.route,
                method=method,
                status=status,
                credential=kind,
                account=p.account if p else None,
                user=p.user if p else None,
                actor=p.actor if p else None,
                error=exchange.error,
                duration_ms=round(elapsed * 1000, 3),
                upstream_ms=round(exchange.timings["upstream"] * 1000, 3)
                if "upstream" in exchange.timings
                else None,
            )
            if p is not None:
                logs.audit(
                    request_id=exchange.request_id,
                    route=exchange.route,
                    method=method,
                    status=status,
                    credential=kind,
                    account=p.account,
                    subject=p.user,
                    actor=p.actor,
                    key_id=p.key_id,
                    outcome=outcome,
                )
                # The dashboard's window onto the latest audit lines: one tuple, no formatting.
                RECENT_AUDIT.append(
                    (
                        time.time(),
                        exchange.request_id,
                        exchange.route,
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

    return impl


def error_middleware() -> Middleware:
    """Renders every error as the gateway's JSON; nothing else ever reaches a client."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        runtime = request[REQUEST_RUNTIME]
        header = runtime.settings.headers.request_id
        max_header_bytes = runtime.settings.limits.max_header_bytes
        try:
            size = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
            if size > max_header_bytes:
                raise HeadersTooLarge(details={"limit": max_header_bytes})
            return await handler(request)
        except GatewayError as error:
            return _render(error, exchange, header)
        except web.HTTPException as exc:
            mapped = _AIOHTTP_STATUS.get(exc.status, GatewayError)
            return _render(mapped(), exchange, header)
        except Exception:
            logs.EVENTS.exception(
                "unhandled error",
                extra={"fields": {"request_id": exchange.request_id, "route": exchange.route}},
            )
            return _render(GatewayError(), exchange, header)

    return impl


def _render(error: GatewayError, exchange: Exchange, header: str) -> web.Response:
    exchange.error = error.code
    response = error_response(error)
    response.headers[header] = exchange.request_id
    if error.status >= 500 and error.code != "service_unavailable":
        logs.event(
            "request failed",
            logging.WARNING,
            request_id=exchange.request_id,
            error=error.code,
            route=exchange.route,
        )
    return response
