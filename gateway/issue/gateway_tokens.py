"""Issuing the tokens the gateway signs itself: user tokens and SDK sessions.

Each is marked with its kind's ``typ`` header and ``tkn`` claim (declared by its kind module,
:mod:`gateway.authn.user_token` and :mod:`gateway.authn.sdk_session`, which also verify them)
and signed by the active signing key.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from jwt import api_jws

from gateway.authn.gateway_token import TokenMarkers
from gateway.authn.sdk_session import MARKERS as SDK
from gateway.authn.user_token import MARKERS as USER
from gateway.clock import Clock
from gateway.config import TokenSettings
from gateway.keys.signing import SigningKeys

__all__ = ["SDK", "USER", "GatewayTokens"]


class GatewayTokens:
    def __init__(self, keys: SigningKeys, settings: TokenSettings, clock: Clock) -> None:
        self.keys = keys
        self._settings = settings
        self._clock = clock

    def issue(
        self,
        kind: TokenMarkers,
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
        # PyJWT signs the claims as JSON bytes: serialized here by orjson (every value is text,
        # an integer or a list of text), which spares jwt.encode's copy of the claims, its
        # datetime conversions (there are none) and its stdlib json.dumps, about 3 µs a token.
        token = api_jws.encode(
            orjson.dumps(claims),
            signer.private,
            algorithm=signer.algorithm,
            headers={"kid": signer.kid, "typ": kind.typ},
        )
        return token, exp
