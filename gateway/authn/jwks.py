"""An identity provider's JWKS, fetched with the gateway's HTTP client and cached.

Keys are fetched on first use, then kept fresh two ways:

- **Periodically**: once the keys are ``refresh_interval`` old, the next request that uses one
  refetches them (the others keep using the keys they have meanwhile, never waiting), so a key
  the provider dropped stops verifying within that interval.
- **On an unknown kid**: a token whose ``kid`` is not among the keys triggers a refetch at once
  instead of waiting for the periodic one, at most once per ``unknown_kid_interval`` (default
  10 s): a flood of tokens with made-up kids cannot turn into a flood of requests to the
  provider. Concurrent requests share one fetch (single flight, under one lock).

Every fetch counts against both intervals, failed ones included, so a provider that is down is
not hammered either. A failed fetch keeps the keys already fetched; with none at all, 503. Keys
are parsed by PyJWT (``PyJWKSet``), never by hand.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import jwt
from yarl import URL

from gateway.bodies import read_at_most
from gateway.clock import Clock
from gateway.errors import InvalidToken, ServiceUnavailable
from gateway.observe import logs
from gateway.pools import HelperPool

MAX_JWKS_BYTES = 256 * 1024
UNKNOWN_KID_INTERVAL = 10.0


class JwksCache:
    def __init__(
        self,
        url: URL,
        refresh_interval: float,
        clock: Clock,
        helper: HelperPool,
        *,
        unknown_kid_interval: float = UNKNOWN_KID_INTERVAL,
        timeout: float = 3.0,
    ) -> None:
        self._url = url
        self._interval = refresh_interval
        self._unknown_kid_interval = unknown_kid_interval
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded = False  # a fetch has succeeded at least once
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._lock = asyncio.Lock()
        self._helper = helper
        self.fetches = 0

    def _due(self, now: float, interval: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= interval

    async def key(self, kid: str) -> jwt.PyJWK:
        """The provider's key ``kid``; :class:`InvalidToken` when the provider does not publish
        it (after at most one refetch), :class:`ServiceUnavailable` when no keys were ever
        fetched."""
        now = self._clock.now()
        found = self._keys.get(kid)
        if found is not None:
            if self._due(now, self._interval) and not self._lock.locked():
                # Periodic refresh by this one request; a fetch already running is not waited
                # for (the keys in hand are at most one interval old).
                async with self._lock:
                    await self._refresh(now)
                found = self._keys.get(kid)
            if found is not None:
                return found
        async with self._lock:
            # Single flight: whoever waited here while another request fetched finds the new
            # keys, or finds the interval not yet passed and does not fetch again.
            found = self._keys.get(kid)
            now = self._clock.now()
            # SECURITY: an unknown kid refetches at most once per interval, so made-up kids
            # cannot make the gateway flood the identity provider.
            if found is None and self._due(now, self._unknown_kid_interval):
                await self._refresh(now)
                found = self._keys.get(kid)
        if found is None:
            if not self._loaded:
                raise ServiceUnavailable(
                    "The identity provider's keys are unavailable.", details={"reason": "jwks"}
                )
            raise InvalidToken(
                "The token's signing key is not known.", details={"reason": "unknown_kid"}
            )
        return found

    async def _refresh(self, now: float) -> None:
        self._fetched_at = now
        self.fetches += 1
        try:
            async with self._helper.client().get(
                self._url, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                body = await read_at_most(response.content, MAX_JWKS_BYTES)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS too large")
            keyset = jwt.PyJWKSet.from_json(body.decode())
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            logs.event(
                "jwks refresh failed; keeping cached keys",
                logging.WARNING,
                url=str(self._url),
                error=type(exc).__name__,
                cached=len(self._keys),
            )
            if not self._loaded:
                raise ServiceUnavailable(
                    "The identity provider's keys are unavailable.", details={"reason": "jwks"}
                ) from None
            return
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
        self._loaded = True
