"""API keys: ``sk_live_…``, ``sk_sandbox_…``, ``sk_test_…``; account-wide, the actor is the key id.

Stored as a SHA-256 digest and verified by :class:`~gateway.keys.service.KeyService` (digest
lookup, constant-time confirmation, status, cached at most ``api_keys.cache_ttl``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.credentials import Credential
from gateway.keys.material import KEY_SHAPE
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal

KIND = CredentialKind("api_key", user_bound=False, rate_identity="key")
SECTION: KindSection | None = None  # no settings of its own


def claims(token: str, header: Mapping[str, Any] | None) -> bool:
    return KEY_SHAPE.match(token) is not None


class ApiKeyAuthenticator:
    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    async def authenticate(self, credential: Credential) -> Principal:
        record = await self._keys.authenticate(credential.value)
        return Principal(
            account=record.account,
            credential=KIND,
            environment=record.environment,
            actor=record.key_id,
            key_id=record.key_id,
            expires_at=record.expires_at,
        )


def build(deps: Dependencies) -> Kind:
    keys = deps.keys
    return Kind(
        KIND,
        claims,
        ApiKeyAuthenticator(keys),
        fresh_until=lambda credential, _: keys.fresh_until(presented=credential.value),
    )
