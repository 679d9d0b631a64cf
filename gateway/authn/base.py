"""What a credential kind module provides, and what it may use to verify.

Every ``gateway/authn/<kind>.py`` declares its :class:`~gateway.principal.CredentialKind` (name
and policy facts) and a ``build(deps) -> Kind``: its shape test (``claims``), and its verifier,
or ``None`` when this deployment does not configure it. :mod:`gateway.authn.registry` lists the
modules in the order their shapes are tried.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.config import Settings
from gateway.credentials import Credential
from gateway.keys.service import KeyService
from gateway.keys.signing import SigningKeys
from gateway.pools import HelperPool
from gateway.principal import CredentialKind, Principal
from gateway.stores.base import Store


class Authenticator(Protocol):
    """Verifies one kind of credential. Returns the :class:`Principal` it proves, or raises a
    :class:`~gateway.errors.GatewayError` (401, or 503 when a dependency it needs is down)."""

    async def authenticate(self, credential: Credential) -> Principal: ...


# The shape test: the token and its unverified JWS header (None when it is not JWS-shaped).
Claims = Callable[[str, Mapping[str, Any] | None], bool]
# See Kind.fresh_until.
FreshUntil = Callable[[Credential, Principal], float]
# A single-use kind's consumption (CredentialKind.consumed_by): the principal, marked consumed.
Consume = Callable[[Credential], Awaitable[Principal]]


@dataclass(frozen=True, slots=True)
class Kind:
    """One entry of the registry. ``fresh_until`` (None: never) tells, right after a
    credential of this kind was authenticated, until when (epoch seconds) that verification is
    as good as a fresh one: the earliest deadline of the caches it was answered from (the key
    record behind it, the kind's own verification cache). The whole decision made for it may be
    reused until then (:mod:`gateway.authz.decisions`), never longer than the kind itself
    would trust its own caches."""

    kind: CredentialKind
    claims: Claims
    authenticator: Authenticator | None
    fresh_until: FreshUntil | None = None
    consume: Consume | None = None
    # The shape of this kind's tokens when a config gives it (an opaque OAuth2 token's
    # pattern): a request id of that shape is replaced (gateway.front.begin); the fixed
    # shapes (keys, mobile tokens, JWTs) are gateway.observe.redact's.
    configured_shape: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class KindSection:
    """A top-level config section a kind declares: its name in the file, its type (a
    :class:`~gateway.config.Section` model, a tuple of them, or one or ``None``), and the
    pydantic ``Field`` with its default and description. :mod:`gateway.settings` adds every
    kind's section to the config model."""

    name: str
    annotation: Any
    field: Any


@dataclass(frozen=True, slots=True)
class Dependencies:
    """Everything a kind's ``build`` may use (``helper`` is the pool for the gateway's own
    HTTP calls: JWKS, introspection)."""

    settings: Settings
    clock: Clock
    keys: KeyService
    store: Store
    signing: SigningKeys
    helper: HelperPool


def never(token: str, header: Mapping[str, Any] | None) -> bool:
    """The shape test of a kind this deployment does not configure."""
    return False
