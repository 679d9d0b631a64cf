"""SDK sessions: gateway-signed JWTs returned by ``POST /v1/sdk/initialize``.

Bound to the user of the mobile token that was consumed for it, and narrowed to its scopes
(``activity``, ``sleep``, ``vitals``): a rule's ``sdk_scope`` must be among them.
"""

from __future__ import annotations

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.authn.gateway_token import TokenMarkers, gateway_token_kind
from gateway.principal import CredentialKind

KIND = CredentialKind(
    "sdk_session",
    user_bound=True,
    refusal="SDK sessions can only be used on the SDK's routes.",
    rate_identity="user",
    narrowing="sdk",
)
SECTION: KindSection | None = None  # no settings of its own
MARKERS = TokenMarkers(typ="gw-sdk+jwt", tkn="sdk")

claims = MARKERS.claims


def build(deps: Dependencies) -> Kind:
    return gateway_token_kind(KIND, MARKERS, deps)
