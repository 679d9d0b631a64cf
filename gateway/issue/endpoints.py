"""The gateway-owned endpoints: user tokens, mobile tokens, SDK initialization, JWKS.

Reached through the policy like any route (``handler:`` in a rule), so they are authenticated and
authorized by the same pipeline before these functions run.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.authn import api_key
from gateway.authn.mobile_token import KIND as MOBILE_TOKEN
from gateway.bodies import (
    CLIENT_BODY_FAILURES,
    client_body_error,
    expect_continue,
    read_at_most,
)
from gateway.clock import rfc3339
from gateway.config import Limits
from gateway.errors import (
    GatewayError,
    InsufficientScope,
    InvalidRequest,
    PayloadTooLarge,
)
from gateway.identifiers import is_identifier
from gateway.issue.gateway_tokens import SDK, USER
from gateway.issue.mobile import SCOPES
from gateway.json_object import DuplicateMember, loads_object
from gateway.pipeline import Endpoint
from gateway.principal import Principal
from gateway.runtime import Runtime

MAX_BODY = 64 * 1024
# Copied into every answer's own headers by web.Response (so edge headers added to one answer
# never reach another); given whole, they spare aiohttp parsing a content_type argument.
# SECURITY: a token in the body: no cache anywhere may keep it (Cache-Control: no-store).
_JSON_HEADERS = CIMultiDict({"Content-Type": "application/json", "Cache-Control": "no-store"})


def _json(data: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(data), headers=_JSON_HEADERS)


async def _body(request: web.Request, limits: Limits) -> dict[str, Any]:
    """The JSON object a token request sends, read as the proxy reads a body: 413 over
    ``MAX_BODY`` (or ``limits.max_body_bytes`` when lower), 408 for a client that stalls
    ``limits.body_timeout`` mid-body, 400 for a body cut short or wrongly framed."""
    limit = min(MAX_BODY, limits.max_body_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(details={"limit": limit})
    # SECURITY: the body is invited (Expect: 100-continue) only once the request was admitted.
    await expect_continue(request)
    content = request.content
    # All of it in already (nearly every token request): nothing to wait for, so no timer.
    timeout = None if content.is_eof() else limits.body_timeout
    try:
        raw = await read_at_most(content, limit, timeout)
    except CLIENT_BODY_FAILURES as failure:
        raise client_body_error(failure) from None
    if len(raw) > limit:
        raise PayloadTooLarge(details={"limit": limit})
    try:
        return loads_object(raw)
    except DuplicateMember:
        raise InvalidRequest(
            "The body names a member more than once.", details={"reason": "duplicate_member"}
        ) from None
    except ValueError:
        raise InvalidRequest(
            "The body must be a JSON object.", details={"reason": "body"}
        ) from None


def _user_id(data: dict[str, Any]) -> str:
    user_id = data.get("user_id")
    if not isinstance(user_id, str) or not is_identifier(user_id):
        raise InvalidRequest(
            "user_id must be 1-128 letters, digits, '_' or '-'.", details={"field": "user_id"}
        )
    return user_id


def _require_api_key(principal: Principal) -> str:
    # SECURITY: only an API key issues tokens, even if a policy were edited to allow more.
    if principal.credential is not api_key.KIND or principal.key_id is None:
        raise InsufficientScope(
            "Only an API key can issue tokens.", details={"reason": "credential_kind"}
        )
    return principal.key_id


async def _confirm_user(runtime: Runtime, principal: Principal, user_id: str) -> None:
    if runtime.membership.confirmed(principal, user_id):
        return  # cached: no identity headers rendered, no session leased
    upstream = runtime.upstream_for(principal)
    # Leased, so a reload closes this pool only after the check is done.
    with runtime.forwarder.lease(upstream.name) as session:
        await runtime.membership.ask(
            session,
            upstream.url,
            principal,
            user_id,
            runtime.identity.render(principal),
            upstream.name,
        )


async def user_token(
    request: web.Request, runtime: Runtime, principal: Principal
) -> web.StreamResponse:
    """``POST /v1/auth/user-token`` and ``/refresh``: ``{"user_id"}`` → a 1-hour user token."""
    key_id = _require_api_key(principal)
    user_id = _user_id(await _body(request, runtime.settings.limits))
    await _confirm_user(runtime, principal, user_id)
    token, exp = runtime.tokens.issue(
        USER,
        user=user_id,
        account=principal.account,
        environment=principal.environment,
        key_id=key_id,
        ttl=runtime.settings.tokens.user_token_ttl,
    )
    runtime.metrics.token_issued("user_token")
    return _json({"token": token, "user_id": user_id, "expires_at": rfc3339(exp)})


async def mobile_token(
    request: web.Request, runtime: Runtime, principal: Principal
) -> web.StreamResponse:
    """``POST /v1/auth/mobile-token``: ``{"user_id", "scopes"?}`` → a single-use ``mt_`` token."""
    key_id = _require_api_key(principal)
    data = await _body(request, runtime.settings.limits)
    user_id = _user_id(data)
    scopes = data.get("scopes", list(SCOPES))
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s in SCOPES for s in scopes)
    ):
        raise InvalidRequest(
            f"scopes must be a non-empty subset of {', '.join(SCOPES)}.",
            details={"field": "scopes"},
        )
    ordered = tuple(s for s in SCOPES if s in scopes)
    await _confirm_user(runtime, principal, user_id)
    token, record = await runtime.mobile.issue(
        account=principal.account,
        environment=principal.environment,
        user=user_id,
        scopes=ordered,
        key_id=key_id,
    )
    runtime.metrics.token_issued("mobile_token")
    return _json(
        {
            "token": token,
            "user_id": user_id,
            "scopes": list(ordered),
            "expires_at": rfc3339(record.expires_at),
        }
    )


async def sdk_initialize(
    request: web.Request, runtime: Runtime, principal: Principal
) -> web.StreamResponse:
    """``POST /v1/sdk/initialize`` with ``Bearer mt_…``, which admission consumed (the kind's
    ``consumed_by``): answer an SDK session for the user it was issued for."""
    # SECURITY: only a mobile token this request used up; nothing else ever mints a session.
    if principal.credential is not MOBILE_TOKEN or not principal.consumed:
        raise InsufficientScope(
            "Only a mobile token can initialize the SDK.", details={"reason": "credential_kind"}
        )
    user, key_id = principal.user, principal.key_id
    if user is None or key_id is None:
        raise GatewayError()  # every mobile token names both
    session, exp = runtime.tokens.issue(
        SDK,
        user=user,
        account=principal.account,
        environment=principal.environment,
        key_id=key_id,
        ttl=runtime.settings.tokens.sdk_session_ttl,
        scopes=principal.scopes,
    )
    runtime.metrics.token_issued("sdk_session")
    return _json(
        {
            "session_token": session,
            "user_id": user,
            "scopes": list(principal.scopes),
            "expires_at": rfc3339(exp),
        }
    )


async def jwks(request: web.Request, runtime: Runtime, exchange: object) -> web.Response:
    """``GET /.well-known/jwks.json``: public keys of every signing key in use."""
    body = orjson.dumps(runtime.tokens.keys.jwks())
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "public, max-age=300"}
    )


HANDLERS: dict[str, Endpoint] = {
    "user_token": user_token,
    "user_token_refresh": user_token,
    "mobile_token": mobile_token,
    "sdk_initialize": sdk_initialize,
}
