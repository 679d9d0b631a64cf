"""``X-Auth-Assertion``: a short-lived JWT, signed by the gateway's active key, over the
principal, for backends that want proof rather than trust in a header.

Header ``typ: gw-assertion+jwt``; claims ``iss``, ``aud`` (``tokens.audience``), ``tkn:
"assertion"``, ``sub`` (user, if any), ``act``, ``acc``, ``env``, ``cred``, ``scp``, ``kid`` (API
key id, if any), ``iat``, ``exp`` (``tokens.assertion_ttl``). Verify it with the JWKS at
``/.well-known/jwks.json``. The gateway never accepts an assertion as a credential. One
assertion per principal is reused for half its lifetime, so signing is off the hot path.
"""

from __future__ import annotations

from typing import Any

import jwt

from gateway.clock import Clock
from gateway.config import TokenSettings
from gateway.credentials import ASSERTION_TYP
from gateway.keys.signing import SigningKeys
from gateway.principal import Principal

MAX_CACHED = 100_000


class Assertions:
    def __init__(self, keys: SigningKeys, settings: TokenSettings, clock: Clock) -> None:
        self._keys = keys
        self._settings = settings
        self._clock = clock
        self._cache: dict[Principal, tuple[str, float]] = {}

    def render(self, principal: Principal) -> str:
        now = self._clock.now()
        cached = self._cache.get(principal)
        if cached is not None and now < cached[1]:
            return cached[0]
        ttl = self._settings.assertion_ttl
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "tkn": "assertion",
            "act": principal.actor,
            "acc": principal.account,
            "env": principal.environment,
            "cred": principal.credential.value,
            "scp": list(principal.scopes),
            "iat": int(now),
            "exp": int(now + ttl),
        }
        if principal.user is not None:
            claims["sub"] = principal.user
        if principal.key_id is not None:
            claims["kid"] = principal.key_id
        signer = self._keys.active
        token = jwt.encode(
            claims,
            signer.private,
            algorithm=signer.algorithm,
            headers={"kid": signer.kid, "typ": ASSERTION_TYP},
        )
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[principal] = (token, now + ttl / 2)
        return token
