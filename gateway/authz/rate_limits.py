"""Rate limits per credential or per account, per route group, shared by every replica.

Each rule (``rate_limits.rules``) names a route group, what it counts per (``credential``: the
API key, the user of a user token or SDK session, the member/caregiver pair of a member token,
the person of a team session; or ``account``), and ``limit`` requests per ``period``. The
arithmetic is GCRA, one atomic step in the store (a Lua script on Redis), so all replicas share
one budget. Over the limit: 429 ``rate_limited`` with ``Retry-After``; every limited response
carries ``RateLimit-Limit``/``-Remaining``/``-Reset``. When the store cannot answer,
``on_store_error`` decides: ``deny`` (503, the default) or ``allow``; both are counted.
"""

from __future__ import annotations

import hashlib
import math

from gateway.clock import Clock
from gateway.config import RateLimit, RateLimitSettings
from gateway.errors import RateLimited, StoreUnavailable
from gateway.exchange import Exchange
from gateway.observe.metrics import Metrics
from gateway.principal import Principal
from gateway.stores.base import RateLimitStore


def subject_of(principal: Principal, per: str) -> str:
    """What a rule counts: the account, or the credential's identity as its kind declares it."""
    if per == "account":
        return f"acc:{principal.account}"
    kind = principal.credential
    identity = kind.rate_identity
    if identity == "key":
        return f"key:{principal.key_id}"
    if identity == "subject_actor":
        return f"{kind.name}:{principal.account}:{principal.user}:{principal.actor}"
    if identity == "actor":
        return f"{kind.name}:{principal.account}:{principal.actor}"
    return f"{kind.name}:{principal.account}:{principal.user}"


class RateLimiter:
    def __init__(
        self, store: RateLimitStore, settings: RateLimitSettings, clock: Clock, metrics: Metrics
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._by_group: dict[str, list[RateLimit]] = {}
        for rule in settings.rules:
            self._by_group.setdefault(rule.group, []).append(rule)

    def limits(self, group: str) -> bool:
        """Whether any rule counts requests of this route group."""
        return bool(self._by_group.get(group))

    async def check(self, principal: Principal, group: str, exchange: Exchange) -> None:
        rules = self._by_group.get(group)
        if not rules:
            return
        now = self._clock.now()
        for i, rule in enumerate(rules):
            subject = subject_of(principal, rule.per)
            # Hashed: bounded length, and no identifier ever shapes the store key.
            bucket = hashlib.sha256(f"{group}\x1f{i}\x1f{subject}".encode()).hexdigest()[:32]
            try:
                allowed, remaining, reset = await self._store.rate_limit(
                    bucket, rule.limit, rule.period, now
                )
            except StoreUnavailable:
                self._metrics.rate_limit_store_failures.labels(self._settings.on_store_error).inc()
                if self._settings.on_store_error == "allow":
                    continue
                raise
            if exchange.rate is None or remaining < exchange.rate[1]:
                exchange.rate = (rule.limit, remaining, reset)
            if not allowed:
                self._metrics.rate_limited.labels(group).inc()
                raise RateLimited(
                    f"Rate limit of {rule.limit} requests per {rule.period:g} s exceeded.",
                    details={"limit": rule.limit, "period_seconds": rule.period},
                    headers={"Retry-After": str(max(1, math.ceil(reset)))},
                )
