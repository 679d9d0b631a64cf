"""Caregiver relationships: is (subject, actor) active in this account?

Two providers, chosen by ``relationships.provider``:

- ``store``: relationships live in the gateway's store (Redis or memory), managed with
  ``gateway relationships grant|revoke`` and the admin API. Answers are cached in-process for at
  most one second (enforced by the config), so a revocation reaches every replica within a second.
- ``http``: the gateway asks the backend, ``GET`` on ``relationships.url_template`` with
  ``{account}``, ``{subject}`` and ``{actor}`` filled in. 2xx means active (unless the JSON body
  says ``"active": false``); 403, 404 and 410 mean inactive; anything else, or no answer within
  ``relationships.timeout``, is 503: the gateway fails closed. Positive and negative answers are
  cached for ``positive_ttl`` and ``negative_ttl``.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import orjson
from yarl import URL

from gateway.clock import Clock
from gateway.errors import InsufficientScope, ServiceUnavailable
from gateway.pools import HelperPool
from gateway.principal import Principal
from gateway.stores.base import RelationshipStore
from gateway.ttlcache import StatsFactory, TTLCache


def needs_relationship(principal: Principal) -> bool:
    """Whether ``principal`` acts for another (a caregiver: ``actor`` is not ``user``), so
    that :func:`require_caregiver_relationship` asks about it."""
    return principal.user is not None and principal.actor != principal.user


async def require_caregiver_relationship(
    provider: RelationshipProvider, principal: Principal
) -> None:
    """A principal acting for another (a caregiver: ``actor`` is not ``user``) may act only
    while the relationship is active; asked on every request through the provider's cache."""
    user = principal.user
    if user is None or not needs_relationship(principal):
        return
    # SECURITY: checked per request, never cached with the credential: a revoked relationship
    # stops the caregiver within the cache bound (1 s with the store provider).
    if not await provider.active(principal.account, user, principal.actor):
        raise InsufficientScope(
            f"{principal.actor} has no active caregiver relationship with {user}.",
            details={"reason": "relationship_inactive"},
        )


class RelationshipProvider(Protocol):
    async def active(self, account: str, subject: str, actor: str) -> bool: ...

    def attach_stats(self, stats: StatsFactory) -> None: ...


class _Cached:
    def __init__(self, clock: Clock, positive_ttl: float, negative_ttl: float) -> None:
        self._clock = clock
        self._ttl = {True: positive_ttl, False: negative_ttl}
        self.cache: TTLCache[tuple[str, str, str], bool] = TTLCache(100_000)

    def attach_stats(self, stats: StatsFactory) -> None:
        self.cache.attach(stats("relationship"))

    async def active(self, account: str, subject: str, actor: str) -> bool:
        key = (account, subject, actor)
        now = self._clock.now()
        known = self.cache.get(key, now)
        if known is None:
            known = await self._lookup(account, subject, actor)
            self.cache.put(key, known, now + self._ttl[known])
        return known

    async def _lookup(self, account: str, subject: str, actor: str) -> bool:
        raise NotImplementedError


class StoreRelationships(_Cached):
    def __init__(
        self, store: RelationshipStore, clock: Clock, positive_ttl: float, negative_ttl: float
    ) -> None:
        super().__init__(clock, positive_ttl, negative_ttl)
        self._store = store

    async def _lookup(self, account: str, subject: str, actor: str) -> bool:
        return await self._store.relationship_active(account, subject, actor)


class HttpRelationships(_Cached):
    def __init__(
        self,
        url_template: str,
        clock: Clock,
        positive_ttl: float,
        negative_ttl: float,
        timeout: float,
        helper: HelperPool,
    ) -> None:
        super().__init__(clock, positive_ttl, negative_ttl)
        self._template = url_template
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._helper = helper

    async def _lookup(self, account: str, subject: str, actor: str) -> bool:
        # The identifiers were validated (letters, digits, '_', '-'): safe in a URL as they are.
        url = URL(
            self._template.format(account=account, subject=subject, actor=actor), encoded=True
        )
        try:
            async with self._helper.client().get(
                url,
                timeout=self._timeout,
                allow_redirects=False,
                headers={"X-Auth-Account": account},
            ) as response:
                body = await response.read()
                if response.status in (403, 404, 410):
                    return False
                if 200 <= response.status < 300:
                    try:
                        data = orjson.loads(body) if body else {}
                    except orjson.JSONDecodeError:
                        data = {}
                    return not (isinstance(data, dict) and data.get("active") is False)
        except (aiohttp.ClientError, TimeoutError):
            pass
        raise ServiceUnavailable(
            "The relationship service is unavailable. Retry later.",
            details={"reason": "relationships"},
        )
