"""``identity_providers``: the issuers of team session tokens."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.config.base import Duration, HttpUrl, OneOf, Section
from gateway.config.upstreams import Environment

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
