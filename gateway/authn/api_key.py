"""API keys: account-wide, the actor is the key id."""

from __future__ import annotations

from gateway.credentials import Credential
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal


class ApiKeyAuthenticator:
    kind = CredentialKind.API_KEY

    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    async def authenticate(self, credential: Credential) -> Principal:
        record = await self._keys.authenticate(credential.value)
        return Principal(
            account=record.account,
            credential=CredentialKind.API_KEY,
            environment=record.environment,
            actor=record.key_id,
            key_id=record.key_id,
            expires_at=record.expires_at,
        )
