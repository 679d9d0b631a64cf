"""The request pipeline: extract → authenticate → authorize → mutate → forward.

One function, read top to bottom, is the whole data path of proxy mode. Decision mode runs the
same steps on the original method and URI a proxy in front reports, and answers instead of
forwarding (:mod:`gateway.forward.decision`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from gateway.abuse import FailureBudget
from gateway.authz.authorize import admits_kind, authorize
from gateway.authz.paths import split_path
from gateway.authz.policy import RouteMatch
from gateway.authz.relationships import needs_relationship, require_caregiver_relationship
from gateway.cors import is_preflight, preflight
from gateway.credentials import Credential, extract
from gateway.errors import (
    AuthenticationError,
    AuthorizationError,
    GatewayError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    NotFound,
    UserNotFound,
)
from gateway.exchange import Exchange
from gateway.observe.tracing import CREDENTIAL_KIND
from gateway.principal import CredentialKind, Principal
from gateway.runtime import Runtime


async def admit(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    *,
    serve: bool = True,
    authenticated: Callable[[], None] | None = None,
) -> tuple[Principal, RouteMatch]:
    """Extract, authenticate, match and authorize; the principal and route, or an error.
    ``authenticated`` is called once the credential is known to be valid (the failure
    budget's turn is then over: :func:`admit_client`).

    The route is looked up first (for the metrics' route label) but its verdict is only told to
    an authenticated principal: a request without a valid credential gets 401 on every path and
    method, so nobody can map the policy without one. Traced as two steps, authentication
    (credential kind, outcome, reason) and authorization (route, outcome, reason).

    ``serve``: the gateway will run the endpoint a matched rule names (proxy mode); only then is
    a single-use credential consumed on its consuming route (decision mode only looks at it).

    A decision made before for the same token, method and target is reused while the
    verification it came from is still fresh (:mod:`gateway.authz.decisions`); the
    relationship check and the rate limits still run on every request.
    """
    if not raw_target.isascii() or "#" in raw_target:
        # SECURITY: a target is ASCII on the wire; anything else (raw UTF-8 or undecodable
        # bytes in the query) would be forwarded differently than it was judged, or fail.
        # A '#' is never part of a request target (a fragment stays in the client): one that
        # arrives would be read as a fragment's start by some backends and not by others.
        raise InvalidRequest(
            "The request target must be ASCII, without a '#' (percent-encode the rest).",
            details={"reason": "path"},
        )
    max_bytes = runtime.settings.limits.max_token_bytes
    try:
        token = extract(headers, query, max_bytes=max_bytes)
    except GatewayError:
        token = None  # refused below, after the path's own checks, as without the cache
    now = runtime.clock.now()
    credential: Credential | None = None
    if token is not None and (
        reused := runtime.decisions.get(token, method, raw_target, now, runtime.keys.generation)
    ):
        principal, match = reused
        if authenticated is not None:
            authenticated()
        _reusing(exchange, principal, match)
        tracer = runtime.tracer
        if tracer.enabled:
            with tracer.authentication() as span:
                span.set(CREDENTIAL_KIND, principal.credential.name)
            with tracer.authorization(exchange.route, match.template):
                await require_caregiver_relationship(runtime.relationships, principal)
        else:  # the same, without entering the no-op tracer's spans
            await require_caregiver_relationship(runtime.relationships, principal)
    else:
        principal, match, credential = await _decide(
            runtime, exchange, headers, query, method, raw_target, token, serve, authenticated
        )
        fresh_until = runtime.authenticators.fresh_until(credential, principal)
        runtime.decisions.put(
            credential.value,
            method,
            raw_target,
            (principal, match),
            now,
            fresh_until,
            runtime.keys.generation,
        )
    if runtime.rate_limiter is not None:
        await runtime.rate_limiter.check(principal, match.rule.group, exchange)
    if (
        serve
        and credential is not None
        and _consumed_here(credential.kind, match)
        and not principal.consumed
    ):
        # Looked at, authorized and counted by the rate limits first: now used up.
        with runtime.tracer.authentication():
            principal = exchange.principal = await _consume(runtime, credential)
    return principal, match


def _reusing(exchange: Exchange, principal: Principal, match: RouteMatch) -> None:
    """Note a reused decision in the exchange, as deciding it would have."""
    exchange.route, exchange.group = match.rule.id, match.rule.group
    exchange.credential_present = True
    exchange.credential = principal.credential
    exchange.principal = principal


def reusable_at_once(
    runtime: Runtime,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    peer: str | None,
) -> tuple[Principal, RouteMatch] | None:
    """:func:`admit_client`'s outcome, found without awaiting, when it is a reused decision
    whose per-request checks are all settled in this process's memory: no tracing, the
    client's address known to be within its failure budget, no caregiver relationship to ask
    about, no rate limit on the rule's group. ``None`` otherwise. Counts nothing and writes
    nothing: a caller that uses the decision calls :func:`use_at_once`; one that does not runs
    :func:`admit_client`, which finds everything as if this had not run. A single-use token
    is never among reused decisions (never consumed here).

    Never admits what :func:`admit_client` would refuse: every check it leaves out is one that
    cannot refuse here (no budget spent, no relationship involved, no limit on the group), and
    the decision is the one :func:`admit` would reuse (the same lookup, the same freshness)."""
    if runtime.tracer.enabled:
        return None
    budget = runtime.failure_budget
    # SECURITY: an address the budget does not know to be clean now is asked about by the
    # awaited path (which refuses one past its budget before reading its credential).
    if budget is not None and not budget.known_within(peer, headers):
        return None
    if not raw_target.isascii():
        return None
    try:
        token = extract(headers, query, max_bytes=runtime.settings.limits.max_token_bytes)
    except GatewayError:
        return None
    if token is None:
        return None
    reused = runtime.decisions.get(
        token, method, raw_target, runtime.clock.now(), runtime.keys.generation, count=False
    )
    if reused is None:
        return None
    # SECURITY: a caregiver's relationship is asked about on every request, and a rule's rate
    # limits count every request: either sends the request down the awaited path.
    if needs_relationship(reused[0]) or _rate_limited(runtime, reused[1]):
        return None
    return reused


def use_at_once(
    runtime: Runtime, exchange: Exchange, principal: Principal, match: RouteMatch
) -> None:
    """Count and note a decision :func:`reusable_at_once` found, as :func:`admit` would."""
    runtime.decisions.count_hit()
    _reusing(exchange, principal, match)
    exchange.admitted = True


async def _decide(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    token: str | None,
    serve: bool,
    authenticated: Callable[[], None] | None = None,
) -> tuple[Principal, RouteMatch, Credential]:
    """Match, authenticate and authorize from scratch (``token``: the one :func:`extract`
    found, or None to extract it here, where a malformed credential is refused)."""
    segments = split_path(raw_target.partition("?")[0])
    refusal: NotFound | InsufficientScope | None = None
    try:
        match = runtime.policy.match(method, segments)
        exchange.route, exchange.group = match.rule.id, match.rule.group
    except (NotFound, InsufficientScope) as exc:
        refusal = exc
    tracer = runtime.tracer
    with tracer.authentication() as span:
        if token is None:
            token = extract(headers, query, max_bytes=runtime.settings.limits.max_token_bytes)
        if token is None:
            # SECURITY: before the policy's verdict, which would tell a stranger what exists.
            raise InvalidToken(
                "This request needs an access token (Authorization: Bearer …).",
                details={"reason": "missing"},
            )
        exchange.credential_present = True
        credential = runtime.authenticators.classify(token)
        kind = exchange.credential = credential.kind
        span.set(CREDENTIAL_KIND, kind.value)
        if (
            serve
            and refusal is None
            and _consumed_here(kind, match)
            and admits_kind(kind, match)
            and not _rate_limited(runtime, match)
        ):
            # SECURITY: the rule admits this kind whatever the token proves, and no rate limit
            # waits to count it, so using it up here is its authentication (one store round
            # trip); a token the rule could refuse is never consumed.
            principal = await _consume(runtime, credential)
        else:
            principal = await runtime.authenticators.authenticate(credential)
        exchange.principal = principal
    if authenticated is not None:
        authenticated()
    with tracer.authorization(exchange.route, None if refusal else match.template):
        if refusal is not None:
            raise refusal
        authorize(principal, match, method)
        await require_caregiver_relationship(runtime.relationships, principal)
    return principal, match, credential


async def _consume(runtime: Runtime, credential: Credential) -> Principal:
    """Use a single-use credential up; every attempt counted by its outcome."""
    try:
        principal = await runtime.authenticators.consume(credential)
    except InvalidToken as exc:
        runtime.metrics.mobile_consumption(str(exc.details.get("reason", "invalid")))
        raise
    runtime.metrics.mobile_consumption("ok")
    return principal


def _consumed_here(kind: CredentialKind, match: RouteMatch) -> bool:
    return kind.consumed_by is not None and match.rule.handler == kind.consumed_by


def _rate_limited(runtime: Runtime, match: RouteMatch) -> bool:
    return runtime.rate_limiter is not None and runtime.rate_limiter.limits(match.rule.group)


def admit_client(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    peer: str | None,
    *,
    serve: bool = True,
) -> Awaitable[tuple[Principal, RouteMatch]]:
    """:func:`admit` behind the budget of failed authentications of the client's address
    (``abuse``, :mod:`gateway.abuse`): an address past its budget gets 429 before any
    credential is read, and every 401 :func:`admit` answers is counted against it. Without a
    budget it is :func:`admit` itself (no coroutine of its own around it)."""
    budget = runtime.failure_budget
    if budget is None:
        return admit(runtime, exchange, headers, query, method, raw_target, serve=serve)
    return _admit_budgeted(
        budget, runtime, exchange, headers, query, method, raw_target, peer, serve
    )


async def _admit_budgeted(
    budget: FailureBudget,
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    query: MultiMapping[str],
    method: str,
    raw_target: str,
    peer: str | None,
    serve: bool,
) -> tuple[Principal, RouteMatch]:
    # SECURITY: before any credential lookup; a flood without valid credentials stops here.
    client = await budget.check(peer, headers)
    turn = [True]  # this request holds one of the address's turns (gateway.abuse)

    def over() -> None:
        if turn[0]:
            turn[0] = False
            budget.settled(client)

    try:
        # The turn ends with the authentication: what follows (the policy, a relationship,
        # rate limits) cannot fail it, and holds up nobody else from that address.
        return await admit(
            runtime, exchange, headers, query, method, raw_target, serve=serve, authenticated=over
        )
    except AuthenticationError:
        await budget.failed(client)
        raise
    finally:
        over()


Endpoint = Callable[[web.Request, Runtime, Principal], Awaitable[web.StreamResponse]]
# The gateway-owned endpoints a rule's ``handler:`` names, set by the app (gateway.app).
ENDPOINTS = web.AppKey("endpoints", dict[str, Endpoint])


async def proxy(
    request: web.Request,
    runtime: Runtime,
    exchange: Exchange,
    endpoints: dict[str, Endpoint],
    before_start: Callable[[web.StreamResponse], None] | None = None,
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
        exchange.admitted = True
        try:
            return await endpoints[match.rule.handler](request, runtime, principal)
        except (AuthenticationError, AuthorizationError, UserNotFound):
            # The endpoint's own checks of who asks (a key's kind, the user's membership)
            # refused it: a denial, counted as one, not an endpoint failing after admission.
            exchange.admitted = False
            raise
    upstream = runtime.upstream_for(principal)
    exchange.upstream = upstream.name
    exchange.admitted = True
    identity = runtime.identity.render(principal)
    if runtime.assertions is not None:
        identity = (
            *identity,
            (runtime.settings.headers.assertion, runtime.assertions.render(principal)),
        )
    return await runtime.forwarder.forward(request, upstream, identity, exchange, before_start)
