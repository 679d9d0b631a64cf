"""Time and type checks on verified JWT claims, against the injectable clock.

PyJWT verifies signatures and the issuer and audience; the time claims are checked here so that
every expiry decision uses the gateway's :class:`~gateway.clock.Clock`. Time claims must be JSON
integers (not strings, floats or booleans): RFC 7519 NumericDate, read strictly.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidToken, TokenExpired


def int_claim(payload: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"The token has no {name} claim.", details={"reason": "claims"})
        return None
    # SECURITY: bool is an int in Python; "exp": true must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(
            f"The token's {name} claim must be an integer.", details={"reason": "claims"}
        )
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
