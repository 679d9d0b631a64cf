"""An identity provider's JWKS, fetched with the gateway's HTTP client and cached.

Keys are fetched on first use. An unknown ``kid`` triggers a refresh, at most once per
``refresh_interval`` (so a flood of tokens with made-up kids cannot turn into a flood of
requests to the provider). When the provider is down, the keys already fetched keep working.
Keys are parsed by PyJWT (``PyJWKSet``), never by hand.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import jwt
from yarl import URL

from gateway.clock import Clock
from gateway.errors import InvalidToken, ServiceUnavailable
from gateway.observe import logs

MAX_JWKS_BYTES = 256 * 1024


class JwksCache:
    def __init__(
        self, url: URL, refresh_interval: float, clock: Clock, *, timeout: float = 3.0
    ) -> None:
        self._url = url
        self._interval = refresh_interval
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.session: aiohttp.ClientSession | None = None
        self.fetches = 0

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._keys.get(kid)
            now = self._clock.now()
            if found is None and (
                self._fetched_at is None or now - self._fetched_at >= self._interval
            ):
                await self._refresh(now)
                found = self._keys.get(kid)
        if found is None:
            raise InvalidToken(
                "The token's signing key is not known.", details={"reason": "unknown_kid"}
            )
        return found

    async def _refresh(self, now: float) -> None:
        assert self.session is not None  # opened in the runtime's cleanup_ctx
        self._fetched_at = now
        self.fetches += 1
        try:
            async with self.session.get(
                self._url, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
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
            if not self._keys:
                raise ServiceUnavailable(
                    "The identity provider's keys are unavailable.", details={"reason": "jwks"}
                ) from None
            return
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
