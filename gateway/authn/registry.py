"""The ordered registry of credential kinds: the one place that lists them.

Adding a kind is one module in ``gateway/authn/`` (its ``KIND``, its config ``SECTION``, and a
``build`` giving its shape test and verifier) and one line in :data:`KINDS`. The order is the
order shapes are tried: a token belongs to the first kind whose ``claims`` accepts it, and only
that kind's verifier ever sees it (the gateway never tries verifiers in turn). Opaque shapes
come first, then the JWS kinds marked by their header, and last the team session, which claims
any other JWS.

:class:`Registry` is also the one door every credential goes through, so it enforces the
contract of every verifier: the answer is a principal or a
:class:`~gateway.errors.GatewayError` (401, or 503 when a dependency is down), nothing else.
Whatever else a verifier, or a library under it, raises on a hostile credential (PyJWT raised
``TypeError`` for an RS256 header on an EC key) is a 401 ``invalid_token``, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Final, Protocol

from gateway.authn import (
    api_key,
    introspection,
    member_token,
    mobile_token,
    sdk_session,
    team_session,
    user_token,
)
from gateway.authn.base import Authenticator, Dependencies, Kind, KindSection
from gateway.credentials import Credential, jws_header
from gateway.errors import GatewayError, InvalidToken
from gateway.observe import logs
from gateway.principal import CredentialKind, Principal


class KindModule(Protocol):
    """What a module of ``gateway/authn/`` provides to be a credential kind."""

    @property
    def KIND(self) -> CredentialKind: ...

    @property
    def SECTION(self) -> KindSection | None: ...

    def build(self, deps: Dependencies) -> Kind: ...


KINDS: Final[tuple[KindModule, ...]] = (
    api_key,
    mobile_token,
    user_token,
    sdk_session,
    member_token,
    introspection,
    team_session,  # last: it claims any JWS no kind before it claimed
)


def sections() -> dict[str, tuple[Any, Any]]:
    """The config sections the kinds declare, for :mod:`gateway.settings`."""
    return {
        module.SECTION.name: (module.SECTION.annotation, module.SECTION.field)
        for module in KINDS
        if module.SECTION is not None
    }


class Registry:
    """The kinds of one runtime, in claim order."""

    def __init__(self, kinds: Sequence[Kind]) -> None:
        self.kinds = tuple(kinds)
        self._by_name = {k.kind.name: k for k in self.kinds}
        self._shapes = tuple(k.configured_shape for k in self.kinds if k.configured_shape)

    @classmethod
    def build(cls, deps: Dependencies) -> Registry:
        return cls([module.build(deps) for module in KINDS])

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def kind(self, name: str) -> CredentialKind:
        return self._by_name[name].kind

    def authenticator(self, name: str) -> Authenticator | None:
        entry = self._by_name.get(name)
        return entry.authenticator if entry is not None else None

    def configured_shape(self, text: str) -> bool:
        """Whether ``text`` has the shape a config gives a kind's tokens (with no such kind
        configured, no shape: False at once)."""
        return any(shape.fullmatch(text) for shape in self._shapes)

    def classify(self, token: str) -> Credential:
        """The credential's kind, by its shape alone."""
        header = jws_header(token)
        for entry in self.kinds:
            if entry.claims(token, header):
                return Credential(entry.kind, token, header)
        raise InvalidToken("The token is malformed.", details={"reason": "malformed"})

    def fresh_until(self, credential: Credential, principal: Principal) -> float:
        """Until when the verification that just gave ``principal`` is as good as a fresh one
        (0.0: not at all; see :attr:`~gateway.authn.base.Kind.fresh_until`)."""
        entry = self._by_name.get(credential.kind.name)
        if entry is None or entry.fresh_until is None:
            return 0.0
        return entry.fresh_until(credential, principal)

    async def authenticate(self, credential: Credential) -> Principal:
        entry = self._by_name.get(credential.kind.name)
        authenticator = entry.authenticator if entry is not None else None
        if authenticator is None:
            # SECURITY: a kind with no configured verifier is refused, never passed through.
            raise InvalidToken(
                "This kind of token is not accepted here.", details={"reason": "unsupported_kind"}
            )
        return await self._guarded(credential, authenticator.authenticate(credential))

    async def consume(self, credential: Credential) -> Principal:
        """Authenticate a single-use credential by using it up (its kind's ``consume``)."""
        entry = self._by_name.get(credential.kind.name)
        if entry is None or entry.consume is None:
            # SECURITY: a kind that cannot be consumed is never admitted to a consuming route.
            raise InvalidToken(
                "This kind of token is not accepted here.", details={"reason": "unsupported_kind"}
            )
        return await self._guarded(credential, entry.consume(credential))

    async def _guarded(self, credential: Credential, verifying: Awaitable[Principal]) -> Principal:
        try:
            return await verifying
        except GatewayError:
            raise
        except Exception as exc:
            # SECURITY: a credential that makes verification fail in an unforeseen way proves
            # nobody: refused as a 401 like any bad token (fail closed), logged by type only
            # (never the message, which might quote the credential).
            logs.event(
                "credential verification raised; refused as invalid_token",
                logging.WARNING,
                credential=credential.kind.name,
                error=type(exc).__name__,
            )
            raise InvalidToken(
                "The token could not be verified.", details={"reason": "unverifiable"}
            ) from None
