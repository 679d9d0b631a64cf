"""Does a user belong to the account of the key asking for a token? The backend knows.

Before issuing a token for a user, the gateway asks the upstream ``GET /v1/users/{user_id}`` with
the API key's identity headers: 2xx means the user is in the account, 404 (or 403) means not.
Answers are cached for ``tokens.membership_cache_ttl`` per (account, environment, user).
Anything else is an upstream failure, never a yes; each is counted in
``gateway_upstream_errors_total`` with the labels a proxied request's failure gets (the
upstream's name; ``timeout`` for a 504, ``unavailable`` for a 502).
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from gateway.clock import Clock
from gateway.errors import UpstreamTimeout, UpstreamUnavailable, UserNotFound
from gateway.observe.metrics import Metrics
from gateway.principal import Principal
from gateway.ttlcache import TTLCache

Session = aiohttp.ClientSession


class Membership:
    def __init__(self, clock: Clock, ttl: float, metrics: Metrics) -> None:
        self._clock = clock
        self._ttl = ttl
        self._metrics = metrics
        self.cache: TTLCache[tuple[str, str, str], bool] = TTLCache(100_000)

    def confirmed(self, principal: Principal, user_id: str) -> bool:
        """Whether the cache already says yes (then nothing else is needed); ``UserNotFound``
        when it says no; False when the backend must be asked (:meth:`ask`)."""
        known = self.cache.get(_key(principal, user_id), self._clock.now())
        if known is False:
            raise _not_found(user_id)
        return known is True

    async def ask(
        self,
        session: Session,
        base: URL,
        principal: Principal,
        user_id: str,
        identity: tuple[tuple[str, str], ...],
        upstream_name: str,
    ) -> None:
        """Ask the backend (when :meth:`confirmed` could not tell) and cache its yes or no;
        ``UserNotFound`` for a no. A failure to answer is never cached."""
        now = self._clock.now()
        known = await self._ask(session, base, user_id, identity, upstream_name)
        self.cache.put(_key(principal, user_id), known, now + self._ttl)
        if not known:
            raise _not_found(user_id)

    async def _ask(
        self,
        session: Session,
        base: URL,
        user_id: str,
        identity: tuple[tuple[str, str], ...],
        upstream_name: str,
    ) -> bool:
        # user_id was validated as an identifier, so it is a single safe path segment.
        url = URL(f"{base}/v1/users/{user_id}", encoded=True)
        try:
            async with session.get(url, headers=list(identity), allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                if resp.status in (403, 404):
                    return False
        except TimeoutError:
            self._metrics.upstream_errors.labels(upstream_name, "timeout").inc()
            raise UpstreamTimeout(
                details={"upstream": upstream_name},
                cause="the membership check had no answer within read_timeout",
            ) from None
        except aiohttp.ClientError as exc:
            self._metrics.upstream_errors.labels(upstream_name, "unavailable").inc()
            raise UpstreamUnavailable(
                details={"upstream": upstream_name},
                cause=f"the membership check failed: {type(exc).__name__}",
            ) from None
        self._metrics.upstream_errors.labels(upstream_name, "unavailable").inc()
        raise UpstreamUnavailable(
            "The upstream could not confirm the user.",
            details={"upstream": upstream_name, "status": resp.status},
            cause=f"the membership check was answered {resp.status}",
        )


def _key(principal: Principal, user_id: str) -> tuple[str, str, str]:
    """Membership is per account and environment: another account's key asks again."""
    return principal.account, principal.environment, user_id


def _not_found(user_id: str) -> UserNotFound:
    return UserNotFound(f"No user {user_id} in this account.")
