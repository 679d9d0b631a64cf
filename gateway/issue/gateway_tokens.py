"""Tokens the gateway signs itself: user tokens and SDK sessions.

Each kind has its own ``typ`` header and its own ``tkn`` claim, both checked, so no token of one
kind (nor a member token, a team session or an identity assertion) is ever accepted as another.
The algorithm is pinned per signing key; the key is found by ``kid`` among the configured keys
only. A verified token is cached (bounded LRU) until its expiry, so a repeated token costs a
lookup, not a signature check.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.authn.claims import check_times, str_claim
from gateway.authn.jws_checks import check_jws
from gateway.clock import Clock
from gateway.config import TokenSettings
from gateway.credentials import SDK_SESSION_TYP, USER_TOKEN_TYP
from gateway.errors import InvalidToken
from gateway.issue.signing import SigningKeys
from gateway.ttlcache import TTLCache


@dataclass(frozen=True, slots=True)
class TokenKind:
    typ: str
    tkn: str


USER = TokenKind(USER_TOKEN_TYP, "user")
SDK = TokenKind(SDK_SESSION_TYP, "sdk")


@dataclass(frozen=True, slots=True)
class Verified:
    user: str
    account: str
    environment: str
    key_id: str
    scopes: tuple[str, ...]
    expires_at: int
    jti: str


class GatewayTokens:
    def __init__(self, keys: SigningKeys, settings: TokenSettings, clock: Clock) -> None:
        self.keys = keys
        self._settings = settings
        self._clock = clock
        self.cache: TTLCache[str, Verified] = TTLCache(settings.verify_cache_size)

    def issue(
        self,
        kind: TokenKind,
        *,
        user: str,
        account: str,
        environment: str,
        key_id: str,
        ttl: float,
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, int]:
        now = int(self._clock.now())
        exp = now + int(ttl)
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user,
            "acc": account,
            "env": environment,
            "kid": key_id,
            "tkn": kind.tkn,
            "iat": now,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
        }
        if kind is SDK:
            claims["scp"] = list(scopes)
        signer = self.keys.active
        token = jwt.encode(
            claims,
            signer.private,
            algorithm=signer.algorithm,
            headers={"kid": signer.kid, "typ": kind.typ},
        )
        return token, exp

    def verify(self, token: str, header: Mapping[str, Any], kind: TokenKind) -> Verified:
        now = self._clock.now()
        cached = self.cache.get(token, now)
        if cached is not None:
            if now >= cached.expires_at + self._settings.leeway:
                self.cache.discard(token)
            else:
                return cached
        # SECURITY: the typ marker routes the token here; it is checked again, with the claim.
        if header.get("typ") != kind.typ:
            raise InvalidToken(details={"reason": "wrong_token_type"})
        check_jws(token, header)
        key = self.keys.get(header.get("kid"))
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
        self.cache.put(token, verified, exp + self._settings.leeway)
        return verified
