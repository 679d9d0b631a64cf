"""Noticing a store whose Redis may evict keys to make room.

Under ``maxmemory`` with a policy other than ``noeviction``, a full Redis drops keys nobody
deleted: API keys, caregiver relationships, mobile tokens, rate-limit buckets and failure
budgets. The gateway fails closed on each (an evicted key is an unknown key: 401; an evicted
relationship refuses the caregiver; a bucket or budget starts full), but nothing else says that
anything was lost, and the store watch (:mod:`gateway.keys.watch`) does not see it: the
master-key fingerprint it reads every few seconds is never the least recently used key. Managed
Redis services often default to an evicting policy, so the gateway reads each writable node's
policy itself (``INFO memory``) where docs/operations.md would otherwise only ask an operator
to check it.

:class:`EvictionWatch` looks with the store watch (``runtime.watch_store``) and sets
``gateway_store_evicting`` (1 while a node may evict); a WARNING line names the nodes and their
policies once for each finding, so a policy changed at run time is said too. A store that will
not say (``INFO`` refused by an ACL) is said once at INFO, with what to check by hand.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from gateway.errors import StoreUnavailable
from gateway.observe import logs
from gateway.stores.base import MemoryPolicy, Store

EVICTS = (
    "the store may evict keys when it is full (maxmemory with a policy other than "
    "noeviction): an evicted API key, caregiver relationship or mobile token is refused as "
    "unknown and nothing says it was lost; set maxmemory-policy noeviction "
    "(docs/operations.md, 'Redis that comes back empty')"
)
UNREADABLE = (
    "the store does not say how it evicts (INFO refused): check by hand that its "
    "maxmemory-policy is noeviction (docs/operations.md, 'Redis that comes back empty')"
)


def describe(policies: list[MemoryPolicy]) -> str:
    """``allkeys-lru (maxmemory 67108864 bytes)``, each node named where there are several."""
    return "; ".join(
        (f"{p.node}: " if p.node else "") + f"{p.policy} (maxmemory {p.maxmemory} bytes)"
        for p in policies
    )


class EvictionWatch:
    """What one process last said about its store's eviction policy. A look at another store
    (a reload replaced it) says again what it finds."""

    def __init__(self, evicting: Gauge) -> None:
        self._evicting = evicting
        self._store: Store | None = None
        self._said: str | None = None  # the finding last said about ``_store``

    async def look(self, store: Store) -> None:
        """One look; never raises for a store that does not answer (its own warnings say so,
        and the next look tries again)."""
        if store is not self._store:
            self._store, self._said = store, None
        try:
            policies = await store.memory_policies()
        except StoreUnavailable:
            return
        if policies is None:
            self._evicting.set(0)
            self._say("unreadable", UNREADABLE, logging.INFO)
            return
        evicting = [p for p in policies if p.evicts]
        self._evicting.set(1 if evicting else 0)
        if evicting:
            found = describe(evicting)
            self._say(found, EVICTS, logging.WARNING, policy=found)
        else:
            self._said = None  # fixed: a later evicting policy is said again

    def _say(self, finding: str, message: str, level: int, **fields: str) -> None:
        if finding == self._said:
            return
        self._said = finding
        logs.event(message, level, **fields)
