"""Mobile tokens as credentials. Authenticating one only *looks* at it (it is not consumed):
the policy lets it reach nothing but ``POST /v1/sdk/initialize``, whose handler consumes it
atomically. On any other route it is refused with 403 and stays usable."""

from __future__ import annotations

from gateway.credentials import Credential
from gateway.issue.mobile import MobileTokens, digest
from gateway.principal import CredentialKind, Principal


class MobileTokenAuthenticator:
    kind = CredentialKind.MOBILE_TOKEN

    def __init__(self, tokens: MobileTokens) -> None:
        self._tokens = tokens

    async def authenticate(self, credential: Credential) -> Principal:
        token_digest = digest(credential.value)
        record = await self._tokens.peek(token_digest)
        return Principal(
            account=record.account,
            credential=CredentialKind.MOBILE_TOKEN,
            environment=record.environment,
            actor=record.user,
            user=record.user,
            scopes=record.scopes,
            key_id=record.key_id,
            expires_at=record.expires_at,
            token_id=token_digest,
        )
