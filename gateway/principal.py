"""The one object that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CredentialKind(StrEnum):
    """Every kind of credential the gateway tells apart. The value is what upstreams see in
    ``X-Auth-Credential`` and what policies name in ``allow``."""

    API_KEY = "api_key"
    USER_TOKEN = "user_token"
    MOBILE_TOKEN = "mobile_token"
    SDK_SESSION = "sdk_session"
    MEMBER_TOKEN = "member_token"
    TEAM_SESSION = "team_session"


# Credentials bound to one user: a policy's `bind` parameter must equal their subject.
USER_BOUND = frozenset(
    {
        CredentialKind.USER_TOKEN,
        CredentialKind.MOBILE_TOKEN,
        CredentialKind.SDK_SESSION,
        CredentialKind.MEMBER_TOKEN,
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as verified by an authenticator.

    ``user`` is the subject whose data is reached (``None`` for account-wide credentials),
    ``actor`` who acts (the key id, the user, the caregiver, the signed-in person). ``scopes`` is
    empty when the credential is not narrowed. ``expires_at`` (epoch seconds) bounds how long a
    verification result may be cached. ``token_id`` is a non-secret handle on the credential (the
    digest of a mobile token, the ``jti`` of a JWT) used by handlers that act on the credential.
    """

    account: str
    credential: CredentialKind
    environment: str
    actor: str
    user: str | None = None
    scopes: tuple[str, ...] = ()
    key_id: str | None = None
    expires_at: float | None = None
    token_id: str | None = None

    @property
    def is_caregiver(self) -> bool:
        return self.user is not None and self.actor != self.user
