"""Decision mode (forward auth): a proxy in front asks, the gateway answers; nothing is forwarded.

``GET|POST|… {decision.prefix}[/original/path]``. The original method and URI are read from the
headers the configured front proxy (``decision.proxy``) writes them into, and from no other:

- ``nginx``: ``X-Original-Method`` + ``X-Original-URI`` (``auth_request``, as configured),
- ``ingress-nginx``: ``X-Original-Method`` + ``X-Original-URL`` (``auth-url``),
- ``traefik``: ``X-Forwarded-Method`` + ``X-Forwarded-Uri`` (ForwardAuth),
- ``envoy``: the request itself, with the prefix stripped (``ext_authz`` HTTP service with
  ``path_prefix``).

A front proxy sets its own headers and passes the client's others on untouched, so reading
whichever family is present let a client name the request decided (an ``X-Original-URI`` of
its own behind ingress-nginx, an ``X-Original-Method: GET`` on a Traefik ``DELETE``). Each of
the proxy's two headers must come exactly once (400 otherwise: a proxy not configured as
operations.md shows, or a client's copy beside the proxy's).

The same pipeline as proxy mode runs on them. Allowed: 200, empty body, the identity headers
(``auth-response-headers`` / ``auth_request_set`` copy them to the upstream request). Refused: the
usual JSON error with its status and ``WWW-Authenticate``. Gateway-owned endpoints (token
issuance, SDK initialize) are not decided here: route them to the gateway itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy, istr
from yarl import URL

from gateway.authz.policy import RouteMatch
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from gateway.exchange import Exchange
from gateway.forward.headers import OVERRIDES, WITH_ORIGINAL_URL, refuse_overrides
from gateway.pipeline import admit_client, reusable_at_once
from gateway.principal import Principal
from gateway.runtime import Runtime, no_upstream

# Looked up as istr: a case-insensitive lookup folds a plain str key on every call.
_ORIGINAL_METHOD, _FORWARDED_METHOD = istr("X-Original-Method"), istr("X-Forwarded-Method")
_ORIGINAL_URI, _ORIGINAL_URL = istr("X-Original-URI"), istr("X-Original-URL")
_FORWARDED_URI = istr("X-Forwarded-Uri")


def under(prefix: str | None, path: str) -> bool:
    """Whether ``path`` (no query) is a decision request under ``prefix`` (None: decision mode
    off): the prefix itself or below it, the same test on both listeners."""
    return prefix is not None and (path == prefix or path.startswith(prefix + "/"))


# Per decision.proxy: its method header, its target header and whether the target is a whole
# URL; envoy writes none (the request itself is the original).
ORIGINAL: dict[str, tuple[istr, istr, bool] | None] = {
    "nginx": (_ORIGINAL_METHOD, _ORIGINAL_URI, False),
    "ingress-nginx": (_ORIGINAL_METHOD, _ORIGINAL_URL, True),
    "traefik": (_FORWARDED_METHOD, _FORWARDED_URI, False),
    "envoy": None,
}


def original_target(
    headers: CIMultiDictProxy[str], method: str, raw_path: str, prefix: str, proxy: str | None
) -> tuple[str, str]:
    """(method, raw target) of the request the proxy in front (``decision.proxy``) is asking
    about; ``method`` and ``raw_path`` are the asking request's own (its target, query
    included)."""
    if proxy is None:
        raise NotFound()  # decision mode off (it needs a proxy)
    # SECURITY: the backend gets the client's headers too; one naming another method or target
    # could make it act on a request this decision never allowed.
    refuse_overrides(headers, OVERRIDES if proxy == "ingress-nginx" else WITH_ORIGINAL_URL)
    names = ORIGINAL[proxy]
    if names is None:
        target = raw_path[len(prefix) :] or "/"
    else:
        # Only the configured proxy's headers are read: the client's own copies of another
        # proxy's headers (passed on untouched) never name the request.
        method_header, target_header, whole_url = names
        methods = headers.getall(method_header, ())
        targets = headers.getall(target_header, ())
        # SECURITY: each exactly once: a client's copy beside the proxy's is never a guess.
        if len(methods) != 1 or len(targets) != 1:
            missing = method_header if len(methods) != 1 else target_header
            raise InvalidRequest(
                f"decision.proxy is {proxy}: the front proxy must send {missing} once.",
                details={"reason": "original_request"},
            )
        method, target = methods[0], targets[0]
        if whole_url:
            target = _path_of_url(target)
    if not method.isalpha() or not method.isascii() or not method.isupper() or len(method) > 16:
        raise InvalidRequest("The original method is not valid.", details={"reason": "method"})
    return method, target


def _path_of_url(url: str) -> str:
    """The request target (path and query) of ingress-nginx's ``X-Original-URL``
    (``$scheme://$http_host$request_uri``): exactly the text after the authority, which is the
    ``$request_uri`` nginx forwards byte for byte.

    SECURITY: judged as forwarded, or refused. A URL parser reads more into the text than
    nginx does: yarl drops a fragment and tabs, so ``/v1/users/usr_a/scores#/../../usr_b/
    scores`` was judged as usr_a's path while the backend got (and normalized) all of it. The
    URL must parse, and the parser's path and query must be the text after the authority (the
    client's Host header, which cannot move the path); a ``#`` is also refused by
    :func:`~gateway.pipeline.admit`, in every mode."""
    invalid = InvalidRequest("The original URL is not valid.", details={"reason": "path"})
    _, sep, rest = url.partition("://")
    slash = rest.find("/") if sep else -1
    if slash < 0:
        raise invalid  # no scheme, or no path after the authority
    try:
        parsed = URL(url, encoded=True).raw_path_qs
    except ValueError:
        # ingress-nginx builds this from the client's Host header: a URL that does not parse
        # is the client's bad input (400), never a 500.
        raise invalid from None
    target = rest[slash:]
    # SECURITY: the text judged is the text forwarded (yarl drops an empty query's '?', which
    # changes nothing judged; any other difference is a Host header holding a '?').
    if parsed != target and parsed + "?" != target:
        raise invalid
    return target


_NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())


def query_of(target: str) -> MultiDictProxy[str]:
    _, _, query = target.partition("?")
    if not query:
        return _NO_QUERY
    return MultiDictProxy(MultiDict(parse_qsl(query, keep_blank_values=True)))


async def admitted(
    runtime: Runtime,
    exchange: Exchange,
    headers: CIMultiDictProxy[str],
    method: str,
    raw_path: str,
    peer: str | None,
    prefix: str,
    proxy: str | None,
) -> Principal:
    """The principal of an allowed decision, or the error raised: for both listeners that
    decide, the public one (:func:`decide`) and the decision listener
    (:mod:`gateway.decision_server`). The answer carries the principal's identity headers
    (``runtime.identity``) and :func:`answer_headers`. ``prefix`` is the one the listener
    routed by (read when it started: a reload does not move it), so the original path is
    always what follows the prefix that was matched; ``proxy`` (``decision.proxy``) is read
    then too: a reload that changes either is logged as needing a restart, and is one."""
    method, target = original_target(headers, method, raw_path, prefix, proxy)
    # The peer is the front proxy: trusted (abuse.trusted_proxies), its X-Forwarded-For names
    # the client whose failed authentications are budgeted.
    principal, match = await admit_client(
        runtime,
        exchange,
        headers,
        query_of(target),
        method,
        target,
        peer,
        serve=False,  # SECURITY: a single-use token asked about here is looked at, never used up
    )
    if match.rule.handler is not None:
        raise NotFound(
            "This endpoint is served by the gateway itself: route it to the gateway, "
            "not through forward auth.",
            details={"reason": "gateway_endpoint"},
        )
    served(runtime, principal)
    exchange.admitted = True
    return principal


def served(runtime: Runtime, principal: Principal) -> None:
    """Refuse a credential of an environment this decision endpoint does not admit
    (``decision.environments``) or that has no upstream, as proxy mode refuses the latter:
    503 ``no_upstream``, with no identity headers for the front proxy to copy."""
    # SECURITY: the front proxy forwards what it is told to allow to its one backend, whatever
    # X-Auth-Environment says: a sandbox credential allowed here would reach live data.
    if principal.environment not in runtime.decided_environments:
        raise ServiceUnavailable(
            _not_served(runtime, principal.environment), details={"reason": "no_upstream"}
        )


def _not_served(runtime: Runtime, environment: str) -> str:
    """Why a decision refuses ``environment``: it has no upstream (the words proxy mode uses), or
    decisions do not admit it (``decision.environments``)."""
    if environment not in runtime.settings.environments:
        return no_upstream(environment)
    admitted = " and ".join(runtime.settings.decision.environments)
    return f"Decisions here admit {admitted} credentials only, not {environment} ones."


def admitted_at_once(
    runtime: Runtime,
    headers: CIMultiDictProxy[str],
    method: str,
    raw_path: str,
    peer: str | None,
    prefix: str,
    proxy: str | None,
) -> tuple[Principal, RouteMatch] | None:
    """:func:`admitted`'s decision without awaiting, when it is a reused one that needs
    nothing awaited (:func:`~gateway.pipeline.reusable_at_once`); ``None`` otherwise, a
    refusal included: then :func:`admitted` runs and finds everything as if this had not.
    Counts and writes nothing: the caller that answers with it calls
    :func:`~gateway.pipeline.use_at_once`."""
    try:
        method, target = original_target(headers, method, raw_path, prefix, proxy)
    except GatewayError:
        return None
    decided = reusable_at_once(runtime, headers, query_of(target), method, target, peer)
    if decided is None:
        return None
    principal, match = decided
    if match.rule.handler is not None:
        return None  # a gateway endpoint: refused by admitted
    try:
        served(runtime, principal)
    except GatewayError:
        return None  # an environment not served here: refused by admitted
    return decided


def answer_headers(
    runtime: Runtime, exchange: Exchange, principal: Principal
) -> list[tuple[str, str]]:
    """An allowed decision's headers besides the identity: the request id, and the signed
    assertion when configured."""
    out = [(runtime.settings.headers.request_id, exchange.request_id)]
    if runtime.assertions is not None:
        out.append((runtime.settings.headers.assertion, runtime.assertions.render(principal)))
    return out


def decider(
    prefix: str, proxy: str | None
) -> Callable[[web.Request, Runtime, Exchange], Awaitable[web.Response]]:
    """The public listener's decision endpoint under ``prefix``, asked by ``proxy``."""

    async def decide(request: web.Request, runtime: Runtime, exchange: Exchange) -> web.Response:
        """Answer for the request the proxy in front reports: 200 with the identity headers,
        or the error (raised, rendered by :mod:`gateway.front`). A body announced over
        ``limits.max_body_bytes`` is 413 first, as on the decision listener."""
        limit = runtime.settings.limits.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(details={"limit": limit}, headers={"Connection": "close"})
        principal = await admitted(
            runtime,
            exchange,
            request.headers,
            request.method,
            request.raw_path,
            request.remote,
            prefix,
            proxy,
        )
        response = web.Response(status=200)
        response.headers.extend(runtime.identity.render(principal))
        response.headers.extend(answer_headers(runtime, exchange, principal))
        return response

    return decide
