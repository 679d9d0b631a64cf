"""Verification of the tokens the gateway signs itself (user tokens and SDK sessions).

Shared by :mod:`gateway.authn.user_token` and :mod:`gateway.authn.sdk_session`, whose
verification is the same code parametrized by their markers: each kind has its own ``typ``
header and its own ``tkn`` claim, both checked, so no token of one kind (nor a member token, a
team session or an identity assertion) is ever accepted as another. The algorithm is pinned per
signing key; the key is found by ``kid`` among the configured keys only. A verified token is
cached (bounded) until its expiry, so a repeated token costs a lookup, not a signature check;
the issuing API key's revocation is checked on every request (within the 1 s bound).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.authn.base import Dependencies, Kind
from gateway.authn.claims import check_times, str_claim
from gateway.authn.jws_checks import check_jws
from gateway.clock import Clock
from gateway.config import TokenSettings
from gateway.credentials import Credential
from gateway.errors import InvalidToken
from gateway.keys.service import KeyService
from gateway.keys.signing import SigningKeys
from gateway.principal import CredentialKind, Principal
from gateway.ttlcache import TTLCache, token_key


@dataclass(frozen=True, slots=True)
class TokenMarkers:
    """How a kind of gateway token is marked: its ``typ`` header and its ``tkn`` claim."""

    typ: str
    tkn: str

    def claims(self, token: str, header: Mapping[str, Any] | None) -> bool:
        return header is not None and header.get("typ") == self.typ


@dataclass(frozen=True, slots=True)
class Verified:
    user: str
    account: str
    environment: str
    key_id: str
    scopes: tuple[str, ...]
    expires_at: int
    jti: str


class GatewayTokenAuthenticator:
    """A gateway-signed token of one kind (``markers``), proved into a :class:`Principal`."""

    def __init__(
        self,
        kind: CredentialKind,
        markers: TokenMarkers,
        signing: SigningKeys,
        settings: TokenSettings,
        keys: KeyService,
        clock: Clock,
    ) -> None:
        self.kind = kind
        self._markers = markers
        self._signing = signing
        self._settings = settings
        self._keys = keys
        self._clock = clock
        leeway = settings.leeway
        self.cache: TTLCache[str, Verified] = TTLCache(
            settings.verify_cache_size, key=token_key, deadline=lambda v: v.expires_at + leeway
        )

    async def authenticate(self, credential: Credential) -> Principal:
        verified = self.verify(credential.value, credential.header or {})
        await self._keys.ensure_not_revoked(verified.key_id)
        return Principal(
            account=verified.account,
            credential=self.kind,
            environment=verified.environment,
            actor=verified.user,
            user=verified.user,
            scopes=verified.scopes,
            key_id=verified.key_id,
            expires_at=verified.expires_at,
            token_id=verified.jti,
        )

    def verify(self, token: str, header: Mapping[str, Any]) -> Verified:
        """The token's verified claims, or :class:`InvalidToken` / ``TokenExpired``."""
        now = self._clock.now()
        cached = self.cache.get(token, now)
        if cached is not None:
            if now >= cached.expires_at + self._settings.leeway:
                self.cache.discard(token)
            else:
                return cached
        kind = self._markers
        # SECURITY: the typ marker routes the token here; it is checked again, with the claim.
        if header.get("typ") != kind.typ:
            raise InvalidToken(details={"reason": "wrong_token_type"})
        check_jws(token, header)
        key = self._signing.get(header.get("kid"))
        if key is None:
            raise InvalidToken(
                "The token was not signed by this gateway.", details={"reason": "unknown_kid"}
            )
        try:
            # SECURITY: the algorithm is pinned to the key's own; "none", HS256 with the public
            # key and every other algorithm are refused by PyJWT.
            payload = jwt.decode(
                token,
                key.public,
                algorithms=[key.algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                options={
                    "require": ["iss", "aud", "sub", "iat", "exp", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise InvalidToken(
                "The token's signature or claims are invalid.", details={"reason": "signature"}
            ) from None
        if payload.get("tkn") != kind.tkn:
            raise InvalidToken(details={"reason": "wrong_token_type"})
        _, exp = check_times(payload, now, self._settings.leeway)
        scopes = payload.get("scp", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise InvalidToken(details={"reason": "claims"})
        # Interned: many cached tokens of the same user and key share their strings.
        verified = Verified(
            user=sys.intern(str_claim(payload, "sub")),
            account=sys.intern(str_claim(payload, "acc")),
            environment=sys.intern(str_claim(payload, "env")),
            key_id=sys.intern(str_claim(payload, "kid")),
            scopes=tuple(scopes),
            expires_at=exp,
            jti=str_claim(payload, "jti"),
        )
        if verified.environment not in ("live", "sandbox"):
            raise InvalidToken(details={"reason": "claims"})
        self.cache.add(token, verified)
        return verified


def gateway_token_kind(kind: CredentialKind, markers: TokenMarkers, deps: Dependencies) -> Kind:
    """The registry entry of a gateway-signed kind: told by its ``typ``, verified here."""
    keys = deps.keys
    return Kind(
        kind,
        markers.claims,
        GatewayTokenAuthenticator(
            kind, markers, deps.signing, deps.settings.tokens, keys, deps.clock
        ),
        # The signature holds until expiry; what can change is the revocation of its key.
        fresh_until=lambda _, principal: keys.fresh_until(key_id=principal.key_id),
    )
