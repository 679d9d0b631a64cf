"""The authenticator protocol and the registry that maps a credential kind to its one verifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.credentials import Credential
from gateway.errors import InvalidToken
from gateway.principal import CredentialKind, Principal


class Authenticator(Protocol):
    """Verifies one kind of credential. Returns the :class:`Principal` it proves, or raises a
    :class:`~gateway.errors.GatewayError` (401, or 503 when a store it needs is down)."""

    kind: CredentialKind

    async def authenticate(self, credential: Credential) -> Principal: ...


class Authenticators:
    """The explicit registry, built once in :func:`gateway.runtime.build_authenticators`."""

    def __init__(self, authenticators: Mapping[CredentialKind, Authenticator]) -> None:
        self._by_kind = dict(authenticators)

    def get(self, kind: CredentialKind) -> Authenticator | None:
        return self._by_kind.get(kind)

    async def authenticate(self, credential: Credential) -> Principal:
        authenticator = self._by_kind.get(credential.kind)
        if authenticator is None:
            # SECURITY: a kind with no configured verifier is refused, never passed through.
            raise InvalidToken(
                "This kind of token is not accepted here.", details={"reason": "unsupported_kind"}
            )
        return await authenticator.authenticate(credential)
