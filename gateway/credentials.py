"""Extract the one credential of a request and tell its kind by its shape.

The kind is decided here, once, from the credential's shape: ``sk_…`` is an API key, ``mt_…`` a
mobile token, and a compact JWS is told apart by its protected header (the gateway's own ``typ``
markers, or a ``kid`` of an API key for member tokens). Exactly one authenticator then sees it;
the gateway never tries each verifier in turn.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from multidict import CIMultiDictProxy, MultiMapping

from gateway.errors import InvalidRequest, InvalidToken
from gateway.keys.material import KEY_SHAPE
from gateway.principal import CredentialKind

USER_TOKEN_TYP = "gw-user+jwt"
SDK_SESSION_TYP = "gw-sdk+jwt"
ASSERTION_TYP = "gw-assertion+jwt"

MOBILE_SHAPE = re.compile(r"^mt_[A-Za-z0-9]{32,64}$")
# SECURITY: strict base64url without padding, three non-empty parts. An extra '=' or a '+'/'/'
# spelling of the same bytes is a different, malformed token, so a revoked or used token cannot
# come back in another encoding.
JWS_SHAPE = re.compile(r"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}$")
_TOKEN68ISH = re.compile(r"[\x21-\x7e]+")
_BASIC = re.compile(r"^Basic +([A-Za-z0-9+/]+=*)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Credential:
    """The presented credential. ``header`` is the unverified JWS header of a JWT (used only to
    route it to its verifier, never trusted)."""

    kind: CredentialKind
    value: str = field(repr=False)
    header: Mapping[str, Any] | None = None


def extract(
    headers: CIMultiDictProxy[str], query: MultiMapping[str], *, max_bytes: int
) -> Credential | None:
    """The request's credential, ``None`` when it has none, or an error for anything ambiguous."""
    if "access_token" in query:
        # SECURITY: credentials in URLs end up in logs and browser history (RFC 6750 §5.3).
        raise InvalidRequest(
            "Send the token in the Authorization header, not the query string.",
            details={"reason": "token_in_query"},
        )
    values = headers.getall("Authorization", [])
    if not values:
        return None
    if len(values) > 1:
        # SECURITY: two Authorization headers could be read differently by the backend.
        raise InvalidRequest(
            "Send exactly one Authorization header.", details={"reason": "multiple_authorization"}
        )
    value = values[0]
    if len(value) > max_bytes:
        raise InvalidToken("The credential is too long.", details={"reason": "too_long"})
    if (bearer := _bearer(value)) is not None:
        return classify(bearer)
    if basic := _BASIC.match(value):
        return _basic(basic.group(1))
    raise InvalidToken(
        "Use the Bearer scheme (or Basic with an API key as the username).",
        details={"reason": "scheme"},
    )


def _bearer(value: str) -> str | None:
    """The token of ``Bearer <token>`` (scheme in any case, one or more spaces), else ``None``.

    Written without a case-insensitive regex: that one walked the whole token folding case
    and was the costliest line of a cached request's authentication.
    """
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.lstrip(" ")
    return token if _TOKEN68ISH.fullmatch(token) else None


def _basic(encoded: str) -> Credential:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidToken(
            "Malformed Basic credentials.", details={"reason": "malformed"}
        ) from None
    username, sep, password = decoded.partition(":")
    if not sep or password or not KEY_SHAPE.match(username):
        # Basic carries only an API key as the username, with an empty password.
        raise InvalidToken(
            "Basic authentication takes an API key as the username and an empty password.",
            details={"reason": "malformed"},
        )
    return Credential(CredentialKind.API_KEY, username)


def classify(token: str) -> Credential:
    """Tell the credential's kind by its shape alone."""
    if token.startswith("sk_"):
        if KEY_SHAPE.match(token):
            return Credential(CredentialKind.API_KEY, token)
    elif token.startswith("mt_"):
        if MOBILE_SHAPE.match(token):
            return Credential(CredentialKind.MOBILE_TOKEN, token)
    elif JWS_SHAPE.match(token):
        return _memo_jws(token) if len(token) <= MEMO_MAX_CHARS else _jws(token)
    raise InvalidToken("The token is malformed.", details={"reason": "malformed"})


def _jws(token: str) -> Credential:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"}) from None
    # Read-only: memoized credentials share it, so no verifier can change what another sees.
    return Credential(_jwt_kind(header), token, MappingProxyType(header))


# Reading a JWS header with PyJWT decodes every segment (a third of a cached request's cost).
# The kind is a pure function of the token string, so it is memoized: nothing about validity,
# expiry or revocation is, those are decided afterwards by the credential's authenticator.
# Bounded in entries and in token length (at most 4,096 x 2 KiB), errors are never memoized.
MEMO_MAX_CHARS = 2048
_memo_jws = functools.lru_cache(maxsize=4096)(_jws)


def _jwt_kind(header: Mapping[str, Any]) -> CredentialKind:
    typ, kid = header.get("typ"), header.get("kid")
    if typ == USER_TOKEN_TYP:
        return CredentialKind.USER_TOKEN
    if typ == SDK_SESSION_TYP:
        return CredentialKind.SDK_SESSION
    if typ == ASSERTION_TYP:
        # SECURITY: identity assertions are for backends; they are never a credential.
        raise InvalidToken(
            "This token cannot be used as a credential.", details={"reason": "wrong_token_type"}
        )
    if isinstance(kid, str) and kid.startswith("key_"):
        return CredentialKind.MEMBER_TOKEN
    return CredentialKind.TEAM_SESSION
