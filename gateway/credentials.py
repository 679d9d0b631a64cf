"""Extract the one credential of a request, and the shapes every kind is told apart by.

:func:`extract` finds the token (``Authorization: Bearer``, or an API key as the username of
Basic); :func:`jws_header` reads the unverified header of a compact JWS. Which kind a token is
is decided by the registry (:mod:`gateway.authn.registry`), from these shapes alone: each kind
module's ``claims`` looks at the token and its header, the first that claims it is its kind, and
only that kind's verifier ever sees it. The gateway never tries each verifier in turn.
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

# The identity assertion the gateway signs for backends (gateway.mutate.assertion): never a
# credential, whatever kind would otherwise claim it.
ASSERTION_TYP = "gw-assertion+jwt"
# SECURITY: strict base64url without padding, three non-empty parts. An extra '=' or a '+'/'/'
# spelling of the same bytes is a different, malformed token, so a revoked or used token cannot
# come back in another encoding.
JWS_SHAPE = re.compile(r"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\Z")
_BASIC = re.compile(r"^Basic +([A-Za-z0-9+/]+=*)\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Credential:
    """The presented credential. ``header`` is the unverified JWS header of a JWT (used only to
    route it to its verifier, never trusted)."""

    kind: CredentialKind
    value: str = field(repr=False)
    header: Mapping[str, Any] | None = None


def extract(
    headers: CIMultiDictProxy[str], query: MultiMapping[str], *, max_bytes: int
) -> str | None:
    """The request's token, ``None`` when it has none, or an error for anything ambiguous."""
    if query and _credential_in(query):
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
        return bearer
    if basic := _BASIC.match(value):
        return _basic(basic.group(1))
    raise InvalidToken(
        "Use the Bearer scheme (or Basic with an API key as the username).",
        details={"reason": "scheme"},
    )


_KEY_PREFIXES = ("sk_live_", "sk_sandbox_", "sk_test_")


def _holds_key(text: str) -> bool:
    return "sk_" in text and any(prefix in text for prefix in _KEY_PREFIXES)


_MOBILE_SHAPE = re.compile(r"mt_[A-Za-z0-9]{32,64}\Z")


def _credential_in(query: MultiMapping[str]) -> bool:
    """Whether the query carries a credential: an ``access_token`` parameter (any case), or a
    value shaped like an API key, a mobile token or a JWT under any name (``?api_key=``,
    ``?token=``), which would otherwise reach the backend's logs with the URL."""
    for name, value in query.items():
        if name.lower() == "access_token" or _holds_key(value) or _holds_key(name):
            return True  # a key anywhere in a value, or as a bare parameter (?sk_live_…)
        if value.startswith("mt_") and _MOBILE_SHAPE.match(value):
            return True
        if value.startswith("eyJ") and JWS_SHAPE.match(value):
            return True
    return False


def _bearer(value: str) -> str | None:
    """The token of ``Bearer <token>`` (scheme in any case, one or more spaces), else ``None``.

    Written without a case-insensitive regex: that one walked the whole token folding case
    and was the costliest line of a cached request's authentication.
    """
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.lstrip(" ")
    if token in _VISIBLE_SEEN:
        return token
    if not _visible(token):
        return None
    if len(token) <= MEMO_MAX_CHARS:
        if len(_VISIBLE_SEEN) >= _VISIBLE_SEEN_MAX:
            _VISIBLE_SEEN.clear()
        _VISIBLE_SEEN.add(token)
    return token


# Every byte a Bearer token may hold (visible ASCII, ``[\x21-\x7e]``) maps to itself, every
# other byte to 0.
_VISIBLE_BYTES = bytes(c if 0x21 <= c <= 0x7E else 0 for c in range(256))
# Tokens :func:`_visible` said yes to: a pure function of the string, memoized so that a token
# seen again costs one set lookup (the string's hash, which the decision cache's lookup needs
# anyway) instead of a walk of its few hundred characters: that walk, by a regex, was 8 % of a
# cached decision. Bounded in entries (emptied when full) and in token length.
_VISIBLE_SEEN: set[str] = set()
_VISIBLE_SEEN_MAX = 4096


def _visible(token: str) -> bool:
    """Whether ``token`` is one or more visible ASCII characters, ``[\x21-\x7e]+``.
    ``tests/test_credentials.py`` checks this against that regex for every code point."""
    return bool(token) and token.isascii() and 0 not in token.encode().translate(_VISIBLE_BYTES)


def _basic(encoded: str) -> str:
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
    return username


def jws_header(token: str) -> Mapping[str, Any] | None:
    """The unverified protected header of a compact-JWS-shaped token (read-only), ``None`` for
    any other shape, or :class:`InvalidToken` when it is JWS-shaped but its header is not JSON.

    Used only to route the token to its kind, never trusted: each kind's verifier checks the
    header again.
    """
    if not JWS_SHAPE.match(token):
        return None
    return _memo_jws(token) if len(token) <= MEMO_MAX_CHARS else _jws(token)


def _jws(token: str) -> Mapping[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"}) from None
    if header.get("typ") == ASSERTION_TYP:
        # SECURITY: identity assertions are for backends; they are never a credential.
        raise InvalidToken(
            "This token cannot be used as a credential.", details={"reason": "wrong_token_type"}
        )
    # Read-only: memoized headers are shared, so no verifier can change what another sees.
    return MappingProxyType(header)


# Reading a JWS header with PyJWT decodes every segment (a third of a cached request's cost).
# The header is a pure function of the token string, so it is memoized: nothing about validity,
# expiry or revocation is, those are decided afterwards by the credential's authenticator.
# Bounded in entries and in token length (at most 1,024 x 2 KiB), errors are never memoized.
# Whole decisions are reused before a token is classified (gateway.authz.decisions), so only
# a decision's first request reads the header: a small memo suffices.
MEMO_MAX_CHARS = 2048
_memo_jws = functools.lru_cache(maxsize=1024)(_jws)
