"""Issuing mobile tokens (the kind itself, and its consumption: :mod:`gateway.authn.mobile_token`).

A mobile token is ``mt_`` and 43 base62 characters (about 256 bits). Consumption is one atomic
store operation (a Lua script on Redis), so exactly one caller ever wins, across any number of
replicas.
"""

from __future__ import annotations

from gateway.authn.mobile_token import RETAIN_AFTER_EXPIRY, MobileRecord, digest
from gateway.base62 import random_base62
from gateway.clock import Clock
from gateway.stores.base import MobileTokenStore

SCOPES = ("activity", "sleep", "vitals")


def new_token() -> str:
    """``mt_`` and 43 uniformly random base62 characters (about 256 bits) from the OS's
    CSPRNG (:func:`gateway.base62.random_base62`)."""
    return "mt_" + random_base62(43)


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
