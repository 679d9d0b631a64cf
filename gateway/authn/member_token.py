"""Member and caregiver tokens: HS256 JWTs customers sign with their own API key.

Header ``{"alg": "HS256", "kid": "<key id>"}``; payload ``sub`` (the member), optional ``act``
(a caregiver acting for ``sub``), ``iat``, ``exp`` (at most ``member_tokens.max_lifetime``, 24 h,
after ``iat``) and ``scopes`` (an array of strings; empty means not narrowed). The key named by
``kid`` must be active: revoking, rotating or expiring it ends its member tokens (within the
one-second revocation bound). A token with ``act`` (not equal to ``sub``) proves a caregiver;
whether that caregiver may act for ``sub`` right now is the policy's question
(:mod:`gateway.authz.relationships`), asked after authentication on every request.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Mapping
from typing import Any

import jwt
from jwt.exceptions import InvalidSubjectError
from pydantic import Field

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.authn.claims import check_times, scope_tokens
from gateway.authn.jws_checks import check_jws
from gateway.clock import Clock
from gateway.config.base import Duration, Section
from gateway.credentials import Credential
from gateway.errors import InvalidToken, TokenExpired
from gateway.identifiers import is_identifier
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal
from gateway.ttlcache import TTLCache, token_key

KIND = CredentialKind(
    "member_token",
    user_bound=True,
    refusal="Member tokens cannot be used for this operation.",
    rate_identity="subject_actor",
    narrowing="resource",
)


Proved = tuple[str, str, tuple[str, ...], float]
"""What a verified token's payload proved, as its cache entry keeps it: ``(user, actor, scopes,
exp)``. A tuple of four (72 bytes) rather than the :class:`Principal` (112): 4 MiB less for
the 100,000 tokens a worker may cache, for a Principal built on each hit (about 1.3 µs)."""


class MemberTokenSettings(Section):
    """Member and caregiver tokens (HS256, signed by the customer, `kid` = key id)."""

    max_lifetime: Duration = Field(
        86400.0, ge=1, le=86400, description="Longest `exp - iat` accepted."
    )
    leeway: Duration = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`iat`.")


SECTION = KindSection(
    "member_tokens",
    MemberTokenSettings,
    Field(default_factory=MemberTokenSettings, description="Member-token claim rules."),
)


def _bad(message: str, reason: str) -> InvalidToken:
    return InvalidToken(message, details={"reason": reason})


def _signed_with(token: str, secret: bytes) -> bool:
    """Whether ``token`` is a JWS whose HS256 signature verifies with ``secret`` (the JWS
    layer only: no claim is read)."""
    try:
        jwt.PyJWS().decode(token, secret, algorithms=["HS256"])
    except jwt.PyJWTError:
        return False
    return True


def _signature_invalid() -> InvalidToken:
    return _bad("The token's signature or claims are invalid.", "signature")


_UNKNOWN_KEY_SECRET = secrets.token_bytes(32)


def claims(token: str, header: Mapping[str, Any] | None) -> bool:
    """A JWS whose ``kid`` names an API key (``key_…``): signed by a customer with that key."""
    if header is None:
        return False
    kid = header.get("kid")
    return isinstance(kid, str) and kid.startswith("key_")


class MemberTokenAuthenticator:
    def __init__(
        self,
        keys: KeyService,
        settings: MemberTokenSettings,
        clock: Clock,
        cache_size: int,
    ) -> None:
        self._keys = keys
        self._settings = settings
        self._clock = clock
        # token -> what its payload proved, until its expiry (+ leeway); the key's status is
        # checked on every request through its own 1 s cache.
        leeway = settings.leeway
        self.cache: TTLCache[str, Proved] = TTLCache(
            cache_size, key=token_key, deadline=lambda p: p[3] + leeway
        )

    async def authenticate(self, credential: Credential) -> Principal:
        header = credential.header or {}
        kid = header.get("kid")
        # SECURITY: the algorithm is exactly HS256, whatever else the header says.
        if header.get("alg") != "HS256":
            raise _bad("Member tokens must be signed with HS256.", "alg")
        if not isinstance(kid, str):
            raise _bad("The token's kid must name an API key.", "unknown_kid")
        try:
            active = await self._keys.active_by_id(kid)
        except (TokenExpired, InvalidToken) as exc:
            if exc.details.get("reason") == "unknown_kid":
                # SECURITY: an unknown kid answers exactly like a bad signature (and costs the
                # same HMAC), so nobody can probe which key ids exist.
                self._verify_unknown(credential.value, header)
                raise _signature_invalid() from None
            # SECURITY: a revoked, rotated or expired key's status is told only to a token
            # signed with that key; anyone else gets the bad-signature answer.
            check_jws(credential.value, header)
            if not _signed_with(credential.value, await self._keys.signing_secret(kid)):
                raise _signature_invalid() from None
            if isinstance(exc, TokenExpired):
                raise _bad(
                    "The API key that signed this token has expired.", "key_expired"
                ) from None
            raise
        now = self._clock.now()
        proved = self.cache.get(credential.value, now)
        if proved is None:
            check_jws(credential.value, header)
            proved = self._verify(credential.value, active.secret, now)
            self.cache.add(credential.value, proved)
        user, actor, scopes, exp = proved
        record = active.record
        # The account and environment are the signing key's (the kid is part of the token, so
        # of its digest): read from the key's record, they need no bytes in the cache entry.
        return Principal(
            account=record.account,
            credential=KIND,
            environment=record.environment,
            actor=actor,
            user=user,
            scopes=scopes,
            key_id=record.key_id,
            expires_at=exp,
        )

    @staticmethod
    def _verify_unknown(token: str, header: Any) -> None:
        """The checks and verification work a token whose key does not exist would get with a
        key, in the same order (the header checks raise as they would for a known key), against
        a secret that matches nothing."""
        check_jws(token, header)
        with contextlib.suppress(jwt.PyJWTError):
            jwt.decode(token, _UNKNOWN_KEY_SECRET, algorithms=["HS256"])

    def _verify(self, token: str, secret: bytes, now: float) -> Proved:
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={
                    "require": ["sub", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                },
            )
        except (jwt.MissingRequiredClaimError, InvalidSubjectError):
            # Checked after the signature verified: only the key's holder learns this.
            raise _bad(
                "The token lacks sub, iat or exp, or its sub is not text.", "claims"
            ) from None
        except jwt.PyJWTError:
            raise _signature_invalid() from None
        iat, exp = check_times(payload, now, self._settings.leeway)
        if exp - iat > self._settings.max_lifetime:
            raise _bad("Member tokens may live at most 24 hours (exp - iat).", "lifetime")
        sub = payload.get("sub")
        if not is_identifier(sub):
            raise _bad("The token's sub must be a member id.", "claims")
        assert isinstance(sub, str)
        actor = sub
        if "act" in payload:
            act = payload["act"]
            if not isinstance(act, str) or not is_identifier(act):
                raise _bad("The token's act must be a member id.", "claims")
            actor = act
        scopes = scope_tokens(payload.get("scopes", []))
        if scopes is None:
            raise _bad(
                "The token's scopes must be an array of at most 64 scopes, each printable "
                "ASCII without space, '\"' or '\\'.",
                "claims",
            )
        # Interned: 100,000 cached tokens of a few members share their strings (memory bound).
        return sys.intern(sub), sys.intern(actor), scopes, exp


def build(deps: Dependencies) -> Kind:
    keys = deps.keys
    return Kind(
        KIND,
        claims,
        MemberTokenAuthenticator(
            keys,
            deps.settings.section("member_tokens", MemberTokenSettings),
            deps.clock,
            deps.settings.tokens.verify_cache_size,
        ),
        # The signature holds until expiry; what can change is the status of the signing key.
        fresh_until=lambda _, principal: keys.fresh_until(key_id=principal.key_id),
    )
