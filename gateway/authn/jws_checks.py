"""Checks on a compact JWS before any verifier trusts a byte of it (RFC 8725 §3).

PyJWT parses and verifies; these checks refuse what it would accept but this gateway never
should:

- ``crit`` in the header: the gateway understands no critical extension (RFC 7515 §4.1.11).
- key-bearing headers ``jku``, ``x5u``, ``jwk``, ``x5c``: keys come only from the gateway's own
  configuration and the identity providers' configured JWKS URLs, never from the token, and a
  token that offers one is refused rather than silently ignored.
- duplicate member names in the header or the payload: RFC 7515 §5.2 lets a parser pick either,
  so a token that could mean two things is refused (RFC 8259 §4).
- ``cty: JWT`` (nested tokens) and anything but three base64url parts (JWE has five).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from jwt.utils import base64url_decode

from gateway.errors import InvalidToken
from gateway.json_object import refuse_duplicates

FORBIDDEN_HEADERS = ("crit", "jku", "x5u", "jwk", "x5c")


def _segment(segment: str) -> Any:
    try:
        return json.loads(base64url_decode(segment), object_pairs_hook=refuse_duplicates)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"}) from None


def check_jws(token: str, header: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidToken` unless ``token`` is a plain, unambiguous compact JWS."""
    # SECURITY: RFC 8725 §2.4/§3.10: never fetch or trust keys named inside the token.
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise InvalidToken(
                f"Tokens with a {name!r} header are not accepted.", details={"reason": "header"}
            )
    # SECURITY: nested tokens are not unwrapped (RFC 8725 §2.8 confusion between layers).
    if str(header.get("cty", "")).upper() == "JWT":
        raise InvalidToken("Nested tokens are not accepted.", details={"reason": "header"})
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"})
    # SECURITY: duplicate member names could be read differently by another parser.
    if not isinstance(_segment(parts[0]), dict) or not isinstance(_segment(parts[1]), dict):
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"})
