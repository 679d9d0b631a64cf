"""Time, type and scope checks on verified claims (a JWT's, an introspection answer's), against
the injectable clock.

PyJWT verifies signatures and the issuer and audience; the time claims are checked here so that
every expiry decision uses the gateway's :class:`~gateway.clock.Clock`. Time claims must be JSON
integers (not strings, floats or booleans) between 0 and the end of year 9999: RFC 7519
NumericDate, read strictly. Scopes are RFC 6749 scope tokens, whatever the credential.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import InvalidToken, TokenExpired

MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_SCOPES = 64
MAX_SCOPE_LENGTH = 128
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), printable ASCII less '"' and '\'.
# SECURITY: no other byte: a scope is header text, and a separator inside one would split it.
_SCOPE_TOKEN = re.compile(rf"[\x21\x23-\x5b\x5d-\x7e]{{1,{MAX_SCOPE_LENGTH}}}")


def numeric_date(value: object) -> bool:
    """Whether ``value`` is a NumericDate as read here: a JSON integer (never a bool) in range."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_NUMERIC_DATE


def scope_tokens(scopes: object) -> tuple[str, ...] | None:
    """``scopes`` (a list of strings) as a tuple, or None unless each is an RFC 6749 scope
    token and there are at most :data:`MAX_SCOPES`. SECURITY: the scopes become the value of
    ``X-Auth-Scopes``; a control byte, a separator or a megabyte in one would break the
    header or the backend that reads it, or widen what a scope check allows."""
    if not isinstance(scopes, list) or len(scopes) > MAX_SCOPES:
        return None
    for scope in scopes:
        if not isinstance(scope, str) or _SCOPE_TOKEN.fullmatch(scope) is None:
            return None
    return tuple(scopes)


def int_claim(payload: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"The token has no {name} claim.", details={"reason": "claims"})
        return None
    # SECURITY: bool is an int in Python; "exp": true must not pass as 1.
    if not numeric_date(value):
        raise InvalidToken(
            f"The token's {name} claim must be an integer date.", details={"reason": "claims"}
        )
    assert isinstance(value, int)
    return value


def str_claim(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(
            f"The token's {name} claim must be a non-empty string.", details={"reason": "claims"}
        )
    return value


def check_times(payload: dict[str, Any], now: float, leeway: float) -> tuple[int, int]:
    """(iat, exp) after checking exp, iat and nbf; :class:`TokenExpired` past exp."""
    exp = int_claim(payload, "exp")
    iat = int_claim(payload, "iat")
    nbf = int_claim(payload, "nbf", required=False)
    assert exp is not None and iat is not None
    if iat > now + leeway:
        raise InvalidToken("The token was issued in the future.", details={"reason": "iat"})
    if nbf is not None and nbf > now + leeway:
        raise InvalidToken("The token is not valid yet.", details={"reason": "nbf"})
    if exp <= iat:
        raise InvalidToken("The token expires before it was issued.", details={"reason": "exp"})
    if now >= exp + leeway:
        raise TokenExpired(details={"reason": "expired"})
    return iat, exp
