"""The authenticator protocol and the registry that maps a credential kind to its one verifier.

The registry is the one door every credential goes through, so it enforces the protocol's
contract for every verifier: the answer is a principal, a :class:`~gateway.errors.GatewayError`
(401, or 503 when a dependency is down), and nothing else. Whatever else a verifier, or a library
under it, raises on a hostile credential (PyJWT raised ``TypeError`` for an RS256 header on an EC
key) is a 401 ``invalid_token``, never a 500 with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from gateway.credentials import Credential
from gateway.errors import GatewayError, InvalidToken
from gateway.observe import logs
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
        try:
            return await authenticator.authenticate(credential)
        except GatewayError:
            raise
        except Exception as exc:
            # SECURITY: a credential that makes verification fail in an unforeseen way proves
            # nobody: refused as a 401 like any bad token (fail closed), logged by type only
            # (never the message, which might quote the credential).
            logs.event(
                "credential verification raised; refused as invalid_token",
                logging.WARNING,
                credential=credential.kind.value,
                error=type(exc).__name__,
            )
            raise InvalidToken(
                "The token could not be verified.", details={"reason": "unverifiable"}
            ) from None
