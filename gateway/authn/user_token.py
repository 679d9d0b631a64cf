"""User tokens: gateway-signed JWTs (``POST /v1/auth/user-token``), read-only, for one user.

A browser or app holds one for an hour and reads its own user's health data with it; the
default policy lets it ``GET /v1/users/{its user}/…`` and nothing else.
"""

from __future__ import annotations

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.authn.gateway_token import TokenMarkers, gateway_token_kind
from gateway.principal import CredentialKind

KIND = CredentialKind(
    "user_token",
    user_bound=True,
    refusal="User tokens are read-only and can only read their own user's health data.",
    rate_identity="user",
)
SECTION: KindSection | None = None  # no settings of its own
MARKERS = TokenMarkers(typ="gw-user+jwt", tkn="user")

claims = MARKERS.claims


def build(deps: Dependencies) -> Kind:
    return gateway_token_kind(KIND, MARKERS, deps)
