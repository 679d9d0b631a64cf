"""The one place that renders a :class:`~gateway.errors.GatewayError` for a client."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.errors import AuthenticationError, AuthorizationError, GatewayError

REALM = "gateway"

# RFC 6750 §3.1 knows three codes; the gateway's finer codes map onto them in the header while
# the JSON body keeps the precise one.
_RFC6750_CODE = {
    "invalid_token": "invalid_token",
    "token_expired": "invalid_token",
    "insufficient_scope": "insufficient_scope",
    "wrong_user": "insufficient_scope",
}


def _quote(value: str) -> str:
    # SECURITY: a quoted-string may not carry '"' or '\\' unescaped, nor control characters;
    # messages never contain secrets, but must not be able to break the header either.
    # RFC 6750 allows ASCII only: an ellipsis in a message is written as three dots (dropped,
    # "Authorization: Bearer …" read "Authorization: Bearer ").
    cleaned = "".join(ch for ch in value.replace("…", "...") if 0x20 <= ord(ch) < 0x7F)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')


def www_authenticate(error: GatewayError) -> str:
    """The RFC 6750 challenge for a 401 or 403, always naming its code.

    RFC 6750 §3.1 lets a server leave the code out when the request carried no credential; the
    gateway names it on every challenge (``invalid_token`` for a missing one too), so a client
    can tell what happened from the header alone.
    """
    rfc_code = _RFC6750_CODE.get(error.code, "invalid_request")
    return (
        f'Bearer realm="{REALM}", error="{rfc_code}", error_description="{_quote(error.message)}"'
    )


def error_body(error: GatewayError) -> bytes:
    return orjson.dumps({"error": error.code, "message": error.message, "details": error.details})


def error_headers(error: GatewayError) -> dict[str, str]:
    """The headers an error is answered with besides ``Content-Type``: the RFC 6750 challenge of
    a 401 or 403, then the error's own (``Retry-After``, ``Connection: close``…)."""
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationError | AuthorizationError):
        headers["WWW-Authenticate"] = www_authenticate(error)
    headers.update(error.headers)
    return headers


# The gateway's answers name the product, not the framework and interpreter versions (aiohttp
# writes "Python/3.11 aiohttp/3.x" where no Server header was set): nothing to look up a
# vulnerability by.
SERVER = "health-gateway"


def error_response(error: GatewayError) -> web.Response:
    """JSON ``{"error","message","details"}`` with the class's status and headers (the decision
    listener writes the same status, headers and body without aiohttp's objects:
    :mod:`gateway.decision_server`)."""
    response = web.Response(
        status=error.status, body=error_body(error), content_type="application/json"
    )
    response.headers.update(error_headers(error))
    response.headers["Server"] = SERVER
    return response
