"""Mobile tokens: ``mt_`` and 43 base62 characters, single use, five minutes.

The store keeps a token's record under its SHA-256 digest, never the token. The policy lets a
mobile token reach nothing but ``POST /v1/sdk/initialize`` (the kind's ``consumed_by``). There,
once the rule is known to admit the kind, consuming it *is* its authentication: one atomic
store operation (a Lua script on Redis, so exactly one caller ever wins across any number of
replicas) that answers the record of a token it just used up, or why it cannot be used. On any
other route it is only *looked* at (not consumed), refused with 403, and stays usable. The
record is kept an hour past expiry so a late caller learns *why* it failed (used or expired).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.authn.base import Dependencies, Kind, KindSection
from gateway.clock import Clock
from gateway.credentials import Credential
from gateway.errors import InvalidToken
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal
from gateway.stores.base import MobileState, MobileTokenStore

KIND = CredentialKind(
    "mobile_token",
    user_bound=True,
    refusal="Mobile tokens can only be used to initialize the SDK (POST /v1/sdk/initialize).",
    rate_identity="user",
    consumed_by="sdk_initialize",
)
SECTION: KindSection | None = None  # no settings of its own
SHAPE = re.compile(r"^mt_[A-Za-z0-9]{32,64}\Z")
RETAIN_AFTER_EXPIRY = 3600.0

_MESSAGES = {
    MobileState.USED: "This mobile token has already been used. Generate a fresh one from your "
    "backend and retry.",
    MobileState.EXPIRED: "This mobile token has expired. Generate a fresh one from your backend "
    "and retry.",
    MobileState.UNKNOWN: "This mobile token is not valid. Generate a fresh one from your backend "
    "and retry.",
}


@dataclass(frozen=True, slots=True)
class MobileRecord:
    account: str
    environment: str
    user: str
    scopes: tuple[str, ...]
    key_id: str
    expires_at: float

    def to_blob(self) -> bytes:
        # orjson serializes a slotted dataclass natively (``asdict`` deep-copies, 10x slower).
        return orjson.dumps(self)

    @classmethod
    def from_blob(cls, blob: bytes) -> MobileRecord:
        data = orjson.loads(blob)
        data["scopes"] = tuple(data["scopes"])
        return cls(**data)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refusal(state: MobileState) -> InvalidToken:
    """The 401 for a token that cannot be used, with ``details.reason`` used/expired/unknown."""
    return InvalidToken(_MESSAGES[state], details={"reason": state.value})


def claims(token: str, header: Mapping[str, Any] | None) -> bool:
    return SHAPE.match(token) is not None


class MobileTokenAuthenticator:
    def __init__(self, store: MobileTokenStore, keys: KeyService, clock: Clock) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    async def authenticate(self, credential: Credential) -> Principal:
        token_digest = digest(credential.value)
        state, blob = await self._store.peek_mobile(token_digest, self._clock.now())
        if state is not MobileState.OK or blob is None:
            raise refusal(state)
        record = MobileRecord.from_blob(blob)
        await self._keys.ensure_not_revoked(record.key_id)
        return _principal(record, token_digest, consumed=False)

    async def consume(self, credential: Credential) -> Principal:
        """Use the token up (one atomic store operation) and prove who it was issued for; or
        the 401 used / expired / unknown (503 when the store cannot confirm the consumption),
        or ``key_revoked`` / ``key_expired`` for a token of a key that ended since (used up
        all the same: it can never become valid again)."""
        token_digest = digest(credential.value)
        state, blob = await self._store.consume_mobile(token_digest, self._clock.now())
        if state is not MobileState.OK or blob is None:
            raise refusal(state)
        record = MobileRecord.from_blob(blob)
        # SECURITY: a revoked or expired key's mobile token initializes no session.
        await self._keys.ensure_not_revoked(record.key_id)
        return _principal(record, token_digest, consumed=True)


def _principal(record: MobileRecord, token_digest: str, *, consumed: bool) -> Principal:
    return Principal(
        account=record.account,
        credential=KIND,
        environment=record.environment,
        actor=record.user,
        user=record.user,
        scopes=record.scopes,
        key_id=record.key_id,
        expires_at=record.expires_at,
        token_id=token_digest,
        consumed=consumed,
    )


def build(deps: Dependencies) -> Kind:
    authenticator = MobileTokenAuthenticator(deps.store, deps.keys, deps.clock)
    return Kind(KIND, claims, authenticator, consume=authenticator.consume)
