"""Mobile tokens: opaque, single use, five minutes.

A mobile token is ``mt_`` and 43 base62 characters (about 256 bits). The store keeps its record
under the token's SHA-256 digest, never the token. Consumption is one atomic store operation
(a Lua script on Redis), so exactly one caller ever wins, across any number of replicas. The
record is kept an hour past expiry so a late caller learns *why* it failed (used or expired).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

import orjson

from gateway.clock import Clock
from gateway.errors import InvalidToken
from gateway.stores.base import MobileState, MobileTokenStore

ALPHABET = string.ascii_letters + string.digits
SCOPES = ("activity", "sleep", "vitals")
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


def new_token() -> str:
    """``mt_`` and 43 base62 digits of 256 bits from the OS's CSPRNG (62**43 > 2**256)."""
    number = int.from_bytes(secrets.token_bytes(32))
    digits = []
    for _ in range(43):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "mt_" + "".join(digits)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refusal(state: MobileState) -> InvalidToken:
    """The 401 for a token that cannot be used, with ``details.reason`` used/expired/unknown."""
    return InvalidToken(_MESSAGES[state], details={"reason": state.value})


class MobileTokens:
    def __init__(self, store: MobileTokenStore, clock: Clock, ttl: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl

    async def issue(
        self, *, account: str, environment: str, user: str, scopes: tuple[str, ...], key_id: str
    ) -> tuple[str, MobileRecord]:
        now = self._clock.now()
        token = new_token()
        record = MobileRecord(account, environment, user, scopes, key_id, now + self._ttl)
        await self._store.put_mobile(
            digest(token),
            record.to_blob(),
            now,
            record.expires_at,
            record.expires_at + RETAIN_AFTER_EXPIRY,
        )
        return token, record

    async def peek(self, token_digest: str) -> MobileRecord:
        state, blob = await self._store.peek_mobile(token_digest, self._clock.now())
        if state is not MobileState.OK or blob is None:
            raise refusal(state)
        return MobileRecord.from_blob(blob)

    async def consume(self, token_digest: str) -> tuple[MobileState, MobileRecord | None]:
        state, blob = await self._store.consume_mobile(token_digest, self._clock.now())
        return state, (MobileRecord.from_blob(blob) if blob is not None else None)
