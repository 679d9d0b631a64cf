"""Team session tokens: JWTs from the operator's identity provider(s).

The provider is chosen by the token's ``iss`` among the configured ones (an unknown issuer is
refused); the signature is checked with that provider's JWKS, with the algorithm pinned to the
provider's configured list and to the key (a JWK is used only with its own ``alg``, or, when it
names none, the one its type and curve imply); ``aud`` must be the provider's audience. The
account and the person are read from the configured claims. Access is account-wide like an API
key, attributed to the person (``X-Auth-Actor``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import jwt
from pydantic import AfterValidator, Field

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.authn.claims import check_times
from gateway.authn.jwks import JwksCache
from gateway.authn.jws_checks import check_jws
from gateway.clock import Clock
from gateway.config.base import Duration, HttpUrl, OneOf, Section
from gateway.config.errors import problem
from gateway.config.upstreams import Environment
from gateway.credentials import Credential
from gateway.errors import InvalidToken
from gateway.identifiers import is_header_safe, is_identifier
from gateway.principal import CredentialKind, Principal
from gateway.ttlcache import TTLCache, token_key

KIND = CredentialKind("team_session", user_bound=False, rate_identity="actor")
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")


class IdentityProvider(Section):
    """An operator's identity provider whose tokens are team sessions."""

    empty_is_default = frozenset({"algorithms"})

    name: str = Field(description="A name for logs and metrics.")
    issuer: str = Field(description="The `iss` its tokens carry; distinct per provider.")
    audience: str = Field(description="The `aud` its tokens must carry.")
    jwks_url: HttpUrl = Field(description="Where its public keys are published.")
    algorithms: tuple[Annotated[str, OneOf(ALGORITHMS)], ...] = Field(
        ("RS256",), description="Algorithms accepted from it."
    )
    account_claim: str = Field("account", description="The claim naming the account.")
    actor_claim: str = Field("sub", description="The claim naming the person.")
    refresh_interval: Duration = Field(
        60.0,
        ge=1,
        le=86400,
        description="The JWKS is refetched on the first use after this age.",
    )
    # SECURITY: at least a second apart, so made-up kids cannot flood the provider.
    unknown_kid_refetch_interval: Duration = Field(
        10.0,
        ge=1,
        le=3600,
        description="A token with an unknown `kid` refetches the JWKS at once, at most this often.",
    )
    leeway: Duration = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`nbf`.")
    environment: Environment = Field(
        "live", description="The environment its team sessions act in."
    )


def _distinct_issuers(providers: tuple[IdentityProvider, ...]) -> tuple[IdentityProvider, ...]:
    if len({p.issuer for p in providers}) != len(providers):
        raise problem("two providers have the same issuer")
    return providers


IdentityProviders = Annotated[tuple[IdentityProvider, ...], AfterValidator(_distinct_issuers)]
SECTION = KindSection(
    "identity_providers",
    IdentityProviders,
    Field((), description="Issuers of team session tokens (every field in tokens.md)."),
)


def claims(token: str, header: Mapping[str, Any] | None) -> bool:
    """Any JWS no kind before it in the registry claimed (the last JWS kind in the order)."""
    return header is not None


def _bad(message: str, reason: str) -> InvalidToken:
    return InvalidToken(message, details={"reason": reason})


class TeamSessionAuthenticator:
    def __init__(
        self,
        providers: dict[str, tuple[IdentityProvider, JwksCache]],
        clock: Clock,
        cache_size: int,
    ) -> None:
        self._providers = providers
        self._clock = clock
        self.cache: TTLCache[str, Principal] = TTLCache(cache_size, key=token_key)

    async def authenticate(self, credential: Credential) -> Principal:
        now = self._clock.now()
        cached = self.cache.get(credential.value, now)
        if cached is not None:
            return cached
        header = credential.header or {}
        check_jws(credential.value, header)
        try:
            unverified = jwt.decode(credential.value, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _bad("The token is malformed.", "malformed") from None
        issuer = unverified.get("iss")
        found = self._providers.get(issuer) if isinstance(issuer, str) else None
        if found is None:
            raise _bad("The token's issuer is not trusted here.", "issuer")
        provider, jwks = found
        alg, kid = header.get("alg"), header.get("kid")
        # SECURITY: only the provider's configured algorithms; never "none" or HS*.
        if alg not in provider.algorithms:
            raise _bad("The token's algorithm is not allowed.", "alg")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise _bad("The token has no usable kid.", "unknown_kid")
        key = await jwks.key(kid)
        # SECURITY: the key decides the algorithm, not the token: the JWK's `alg` (or, when it
        # names none, the one its type and curve imply) must be the header's. An RS256 header
        # on an EC key (both allowed by the provider) is refused here, never handed to a
        # verifier built for another key type.
        if key.algorithm_name != alg:
            raise _bad("The token's algorithm does not match its key.", "alg")
        try:
            payload: dict[str, Any] = jwt.decode(
                credential.value,
                key,  # the PyJWK itself: PyJWT checks the algorithm against it once more
                algorithms=[alg],
                audience=provider.audience,
                issuer=provider.issuer,
                options={
                    "require": ["iss", "aud", "exp", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise _bad("The token's signature or claims are invalid.", "signature") from None
        _, exp = check_times(payload, now, provider.leeway)
        account, person = payload.get(provider.account_claim), payload.get(provider.actor_claim)
        if not is_identifier(account):
            raise _bad(
                f"The token's {provider.account_claim} claim is not an account id.", "claims"
            )
        if not is_header_safe(person):
            raise _bad(f"The token's {provider.actor_claim} claim is not usable.", "claims")
        assert isinstance(account, str) and isinstance(person, str)
        principal = Principal(
            account=account,
            credential=KIND,
            environment=provider.environment,
            actor=person,
            expires_at=exp,
        )
        # Cached no longer than the JWKS refresh interval: a key the provider drops stops
        # admitting tokens verified with it within two intervals, not at their expiry.
        self.cache.put(
            credential.value, principal, min(exp + provider.leeway, now + provider.refresh_interval)
        )
        return principal


def build(deps: Dependencies) -> Kind:
    # Built with no providers too: a JWS no kind claims is then refused as from an untrusted
    # issuer, like one from a provider that is not configured.
    providers: tuple[IdentityProvider, ...] = getattr(deps.settings, SECTION.name)
    authenticator = TeamSessionAuthenticator(
        {
            idp.issuer: (
                idp,
                JwksCache(
                    idp.jwks_url,
                    idp.refresh_interval,
                    deps.clock,
                    deps.helper,
                    unknown_kid_interval=idp.unknown_kid_refetch_interval,
                ),
            )
            for idp in providers
        },
        deps.clock,
        deps.settings.tokens.verify_cache_size,
    )
    return Kind(
        KIND,
        claims,
        authenticator,
        # As long as its own cache keeps the verification (at most one JWKS refresh interval).
        fresh_until=lambda credential, _: authenticator.cache.fresh_until(credential.value),
    )
