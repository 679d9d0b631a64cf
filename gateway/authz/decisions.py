"""Whole decisions, reused: who a token proves to be and which rule admits it, per request line.

Admitting a request is a pure function of its credential, method and target, the policy and the
state of the caches the credential was verified from. So the outcome of a successful admission
(the principal and the matched rule) is kept, keyed by (token, method, target), and the next
identical request skips classification, verification, the policy walk and the rule's checks.

What keeps this safe:

- An entry lives no longer than the verification it was made from was going to be trusted
  anyway: the kind's ``fresh_until`` (:attr:`~gateway.authn.base.Kind.fresh_until`, e.g. the
  cached record of the API key behind it, at most ``api_keys.cache_ttl``), the credential's
  expiry, and :data:`MAX_AGE`. Revocation is seen exactly as soon as without this cache.
- Only successes are kept; a kind that says nothing about freshness (mobile tokens, which are
  single use and looked at afresh every time) is never kept.
- What is decided per request stays per request: the failure budget of the client's address,
  the caregiver relationship (its own 1 s cache) and the rate limits run on every request, hit or
  miss.
- The cache belongs to one runtime: a reload (new policy, new keys) starts with an empty one,
  and a key revoked or rotated through this process empties it at once (``generation``), as
  that process's key caches forget the key at once.
- Bounded in entries (:data:`MAX_ENTRIES`, least recently used first out); a token longer than
  :data:`MAX_TOKEN_CHARS` is not kept, so memory stays bounded by entries x that size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.authz.policy import RouteMatch
from gateway.principal import Principal
from gateway.ttlcache import TTLCache

if TYPE_CHECKING:
    from gateway.observe.metrics import CacheStats

MAX_ENTRIES = 4096
MAX_AGE = 1.0
MAX_TOKEN_CHARS = 2048

Key = tuple[str, str, str]


class Decisions:
    """The reusable decisions of one runtime (see the module docstring)."""

    __slots__ = ("_cache", "_generation")

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._cache: TTLCache[Key, tuple[Principal, RouteMatch]] = TTLCache(max_entries)
        self._generation = 0

    def get(
        self,
        token: str,
        method: str,
        target: str,
        now: float,
        generation: int,
        *,
        count: bool = True,
    ) -> tuple[Principal, RouteMatch] | None:
        """The decision kept for this request line, if still fresh. ``generation`` counts the
        key changes made through this process: when it moved, everything kept is dropped.
        ``count=False``: the lookup is not counted (:meth:`count_hit` counts a hit used)."""
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation
            return None
        return self._cache.get((token, method, target), now, count=count)

    def count_hit(self) -> None:
        self._cache.count_hit()

    def put(
        self,
        token: str,
        method: str,
        target: str,
        decision: tuple[Principal, RouteMatch],
        now: float,
        fresh_until: float,
        generation: int,
    ) -> None:
        """Keep ``decision`` until the earliest of ``fresh_until``, its credential's expiry and
        :data:`MAX_AGE` from ``now``; not at all if keys changed since the :meth:`get` that
        missed (it may have been made with what was known before)."""
        if len(token) > MAX_TOKEN_CHARS or generation != self._generation:
            return
        expires_at = decision[0].expires_at
        until = min(fresh_until, now + MAX_AGE, expires_at if expires_at is not None else now)
        if until > now:
            self._cache.put((token, method, target), decision, until)

    def attach(self, stats: CacheStats) -> None:
        self._cache.attach(stats)

    def __len__(self) -> int:
        return len(self._cache)
