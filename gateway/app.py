"""Application factories: the public listener and the admin listener."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.admin import METRICS_REGISTRY, WORKER_LISTENERS, admin_routes, json_errors
from gateway.config import Settings
from gateway.dashboard.routes import setup_dashboard
from gateway.front import front_handler, no_expectation
from gateway.issue.endpoints import HANDLERS
from gateway.pipeline import ENDPOINTS
from gateway.protocol import FRONT, parser_limits
from gateway.render import SERVER
from gateway.runtime import CURRENT, Current, runtime_ctx


def create_app(current: Current) -> web.Application:
    """The public app: every path goes through the pipeline (the policy decides what exists).

    Listener-level settings (limits, decision prefix) are read once here; a reload does not
    change them (they need a restart, see :mod:`gateway.reload`)."""
    settings = current.runtime.settings
    app = web.Application(
        client_max_size=settings.limits.max_body_bytes,
        handler_args=server_limits(settings),
    )
    app[CURRENT] = current
    app[ENDPOINTS] = endpoints = dict(HANDLERS)
    app.cleanup_ctx.append(runtime_ctx(current))
    prefix = settings.decision.prefix if settings.decision.enabled else None
    # One handler (gateway.front): the gateway routes by itself. The runner serves it without
    # the router; the one catch-all route is for test clients and apps given middlewares.
    handler = app[FRONT] = front_handler(current, endpoints, prefix, settings.decision.proxy)
    app.router.add_route("*", "/{tail:.*}", handler, expect_handler=no_expectation)
    return app


def create_admin_app(
    current: Current,
    metrics_registry: CollectorRegistry | None = None,
    worker_listeners: dict[str, tuple[str, int]] | None = None,
) -> web.Application:
    """The admin app, with the key dashboard under ``/dashboard``. ``metrics_registry``
    replaces the runtime's own registry on ``/metrics`` (a supervisor serves the registry that
    aggregates its workers); ``worker_listeners`` (a supervisor's: field to address) are
    checked by ``/readyz``."""
    app = web.Application(middlewares=[json_errors])
    app.on_response_prepare.append(_server_header)
    app[CURRENT] = current
    app[METRICS_REGISTRY] = metrics_registry or current.runtime.metrics.registry
    if worker_listeners:
        app[WORKER_LISTENERS] = worker_listeners
    app.add_routes(admin_routes())
    setup_dashboard(app)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """The admin listener's answers name the product, as the public listener's do."""
    response.headers["Server"] = SERVER


def server_limits(settings: Settings) -> dict[str, Any]:
    """aiohttp's request handler settings for the public listener: the parser limits both
    listeners share (:func:`gateway.protocol.parser_limits`), and the connection's timeouts."""
    return {
        **parser_limits(settings.limits),
        # SECURITY: a connection must deliver complete request headers within this time of
        # opening (or of its previous response), else it is closed: no slowloris.
        "keepalive_timeout": settings.limits.header_timeout,
        # After an early answer (413, 408) the unread body is drained for at most this long.
        "lingering_time": min(2.0, settings.limits.body_timeout),
        # The body is forwarded as the client sent it: decompressing it here would forward
        # plain bytes labelled gzip with the compressed Content-Length (a corrupted body), and
        # would make the gateway inflate whatever a client compresses.
        "auto_decompress": False,
    }
