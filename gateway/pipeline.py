"""The request pipeline: extract → authenticate → authorize → mutate → forward.

One function, read top to bottom, is the whole data path of proxy mode. Decision mode runs the
same steps on the original method and URI a proxy in front reports, and answers instead of
forwarding (:mod:`gateway.forward.decision`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from gateway.authz.authorize import authorize
from gateway.authz.paths import split_path
from gateway.authz.policy import RouteMatch
from gateway.authz.relationships import require_caregiver_relationship
from gateway.cors import is_preflight, preflight
from gateway.credentials import extract
from gateway.errors import (
    AuthenticationError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    NotFound,
)
from gateway.exchange import Exchange
from gateway.observe.tracing import CREDENTIAL_KIND
from gateway.principal import Principal
from gateway.runtime import Runtime


async def admit(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
) -> tuple[Principal, RouteMatch]:
    """Extract, authenticate, match and authorize; the principal and route, or an error.

    The route is looked up first (for the metrics' route label) but its verdict is only told to
    an authenticated principal: a request without a valid credential gets 401 on every path and
    method, so nobody can map the policy without one. Traced as two steps, authentication
    (credential kind, outcome, reason) and authorization (route, outcome, reason).
    """
    if not raw_target.isascii():
        # SECURITY: a target is ASCII on the wire; anything else (raw UTF-8 or undecodable
        # bytes in the query) would be forwarded differently than it was judged, or fail.
        raise InvalidRequest(
            "The request target must be ASCII (percent-encode the rest).",
            details={"reason": "path"},
        )
    segments = split_path(raw_target.partition("?")[0])
    refusal: NotFound | InsufficientScope | None = None
    try:
        match = runtime.policy.match(method, segments)
        exchange.route, exchange.group = match.rule.id, match.rule.group
    except (NotFound, InsufficientScope) as exc:
        refusal = exc
    tracer = runtime.tracer
    with tracer.authentication() as span:
        token = extract(headers, query, max_bytes=runtime.settings.limits.max_token_bytes)
        if token is None:
            # SECURITY: before the policy's verdict, which would tell a stranger what exists.
            raise InvalidToken(
                "This request needs an access token (Authorization: Bearer …).",
                details={"reason": "missing"},
            )
        exchange.credential_present = True
        credential = runtime.authenticators.classify(token)
        exchange.credential = credential.kind
        span.set(CREDENTIAL_KIND, credential.kind.value)
        principal = await runtime.authenticators.authenticate(credential)
        exchange.principal = principal
    with tracer.authorization(exchange.route, None if refusal else match.template):
        if refusal is not None:
            raise refusal
        authorize(principal, match, method)
        await require_caregiver_relationship(runtime.relationships, principal)
    if runtime.rate_limiter is not None:
        await runtime.rate_limiter.check(principal, match.rule.group, exchange)
    return principal, match


async def admit_client(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    peer: str | None,
) -> tuple[Principal, RouteMatch]:
    """:func:`admit` behind the budget of failed authentications of the client's address
    (``abuse``, :mod:`gateway.abuse`): an address past its budget gets 429 before any
    credential is read, and every 401 :func:`admit` answers is counted against it."""
    budget = runtime.failure_budget
    if budget is None:
        return await admit(runtime, exchange, headers, query, method, raw_target)
    # SECURITY: before any credential lookup; a flood without valid credentials stops here.
    client = await budget.check(peer, headers)
    try:
        return await admit(runtime, exchange, headers, query, method, raw_target)
    except AuthenticationError:
        await budget.failed(client)
        raise


Endpoint = Callable[[web.Request, Runtime, Principal], Awaitable[web.StreamResponse]]
# The gateway-owned endpoints a rule's ``handler:`` names, set by the app (gateway.app).
ENDPOINTS = web.AppKey("endpoints", dict[str, Endpoint])


async def proxy(
    request: web.Request, runtime: Runtime, exchange: Exchange, endpoints: dict[str, Endpoint]
) -> web.StreamResponse:
    """Proxy mode: admit the request, then run the gateway-owned endpoint its rule names
    (``handler:``, one of ``endpoints``) or forward it with the identity headers."""
    if runtime.settings.cors and is_preflight(request):
        return preflight(request)
    principal, match = await admit_client(
        runtime,
        exchange,
        request.headers,
        request.query,
        request.method,
        request.raw_path,
        request.remote,
    )
    if match.rule.handler is not None:
        return await endpoints[match.rule.handler](request, runtime, principal)
    upstream = runtime.upstream_for(principal)
    exchange.upstream = upstream.name
    identity = runtime.identity.render(principal)
    if runtime.assertions is not None:
        identity = (
            *identity,
            (runtime.settings.headers.assertion, runtime.assertions.render(principal)),
        )
    return await runtime.forwarder.forward(
        request, upstream, identity, exchange.request_id, exchange.timings
    )
