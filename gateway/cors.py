"""CORS at the edge, for browser clients calling the API directly with a user token.

Preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are answered here,
unauthenticated, and never forwarded. Every response to an allowed origin, errors included, gets
``Access-Control-Allow-Origin`` (the origin itself, never ``*`` with credentials) and the
exposed headers, so a page can read a 401 body. ``Vary: Origin`` is always set when CORS is
configured. The upstream's own ``Access-Control-*`` headers are replaced: the gateway owns CORS.
"""

from __future__ import annotations

from aiohttp import web

from gateway.authz.paths import split_path
from gateway.config import CorsPolicy
from gateway.errors import GatewayError
from gateway.exchange import EXCHANGE
from gateway.runtime import REQUEST_RUNTIME

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")


def find_policy(
    policies: tuple[CorsPolicy, ...], origin: str, group: str | None
) -> CorsPolicy | None:
    for policy in policies:
        if policy.groups and (group is None or group not in policy.groups):
            continue
        if origin in policy.origins or "*" in policy.origins:
            return policy
    return None


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight(request: web.Request) -> web.Response:
    """The answer to a preflight: 204, with the CORS headers only for an allowed origin."""
    runtime = request[REQUEST_RUNTIME]
    exchange = request[EXCHANGE]
    response = web.Response(status=204)
    requested = request.headers["Access-Control-Request-Method"]
    try:
        raw_path = request.raw_path.partition("?")[0]
        match = runtime.policy.match(requested, split_path(raw_path))
    except GatewayError:
        return response  # no such route or method: no CORS headers, the browser blocks it
    exchange.route, exchange.group = match.rule.id, match.rule.group
    policy = find_policy(runtime.settings.cors, request.headers["Origin"], match.rule.group)
    if policy is None or requested not in policy.methods:
        return response
    wanted = [
        h.strip()
        for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
        if h.strip()
    ]
    allowed = {h.lower() for h in policy.headers}
    if any(h.lower() not in allowed for h in wanted):
        return response
    response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    if policy.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Allow-Methods"] = ", ".join(policy.methods)
    response.headers["Access-Control-Allow-Headers"] = ", ".join(policy.headers)
    response.headers["Access-Control-Max-Age"] = str(policy.max_age)
    return response


def rate_headers(rate: tuple[int, int, float]) -> dict[str, str]:
    """The ``RateLimit-*`` headers of the tightest rate limit that applied (``Exchange.rate``)."""
    limit, remaining, reset = rate
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(max(0, int(reset + 0.999))),
    }


def edge_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS and rate-limit headers to a response before it is sent (streamed proxy
    responses and rendered errors alike): called by :mod:`gateway.front` for every public
    answer, and by the forwarder just before a streamed answer starts."""
    runtime = request[REQUEST_RUNTIME]
    exchange = request[EXCHANGE]
    if exchange.rate is not None:
        response.headers.update(rate_headers(exchange.rate))
    policies = runtime.settings.cors
    if not policies:
        return
    response.headers.add("Vary", "Origin")
    if is_preflight(request):
        return  # preflight() decided its own headers
    for name in [h for h in response.headers if h.lower().startswith("access-control-")]:
        del response.headers[name]
    origin = request.headers.get("Origin")
    if origin is None:
        return
    policy = find_policy(policies, origin, exchange.group)
    if policy is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    if policy.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Expose-Headers"] = ", ".join(
        (*policy.expose_headers, *RATE_HEADERS)
    )
