"""A bounded LRU map whose entries expire: the verification caches of every credential kind.

Each entry has a *fresh* deadline (after which it must not be used to admit anyone) and an
optional later *stale* deadline (used only when an operator configured a stale-cache window and
the store is unreachable). Memory is bounded by ``maxsize``: past it, the least recently used
sixteenth of the entries goes at once.

A plain ``dict`` (insertion-ordered; a hit moves its entry to the end) rather than an
``OrderedDict``: half the memory an entry (about 52 bytes against 105: 5 MiB for the 100,000
verified tokens of a busy worker) and a cheaper hit. Evicting in sixteenths is what makes a dict
fit: a dict keeps the holes its deletions leave until it resizes, and finding its oldest entry
walks them, so evicting one entry at a time would walk the same holes on every insertion; one
walk per sixteenth costs a few steps an insertion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from gateway.observe.metrics import CacheStats

StatsFactory = Callable[[str], "CacheStats"]
K = TypeVar("K")
V = TypeVar("V")


_from_bytes = int.from_bytes


def token_key(token: str) -> int:
    """A credential as a verification cache keeps it: a 128-bit BLAKE2b digest, not the token.
    A cached JWT is a few hundred bytes; 100,000 of them held whole were a fifth of a worker's
    memory. And a process's memory then holds no reusable credential. (Finding another token
    with the digest of one cached is a second preimage on 128 bits: out of reach.) Held as an
    int: 44 bytes, which the allocator rounds to 48, where the 16-byte ``bytes`` (49) took 64."""
    return _from_bytes(hashlib.blake2b(token.encode(), digest_size=16).digest(), "little")


class TTLCache(Generic[K, V]):
    """``key`` (None: the key itself) maps every key before it is stored or looked up (the
    credential caches pass :func:`token_key`). ``deadline`` (None: given with each entry)
    derives an entry's fresh deadline from its value (a verified token's expiry): such a cache
    stores the bare value, not a tuple of it and its deadlines (88 bytes less an entry), is
    filled with :meth:`add`, and has no stale window."""

    __slots__ = ("_data", "_deadline", "_key", "_stats", "hits", "maxsize", "misses")

    def __init__(
        self,
        maxsize: int,
        stats: CacheStats | None = None,
        key: Callable[[K], Hashable] | None = None,
        deadline: Callable[[V], float] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self._data: dict[Hashable, Any] = {}
        self._stats = stats
        self._key = key
        self._deadline = deadline
        self.hits = 0
        self.misses = 0

    def _entry(self, stored: Any) -> tuple[V, float, float]:
        if self._deadline is None:
            return cast("tuple[V, float, float]", stored)
        until = self._deadline(stored)
        return stored, until, until

    def get(self, key: K, now: float, *, stale: bool = False, count: bool = True) -> V | None:
        """The value of ``key`` while fresh (with ``stale``: until its stale deadline), counted
        as a hit or a miss unless ``count`` is false (then :meth:`count_hit` may count it)."""
        k: Hashable = key if self._key is None else self._key(key)
        entry = self._data.get(k)
        if entry is not None:
            value, fresh_until, stale_until = (
                entry if self._deadline is None else self._entry(entry)
            )
            if now < (stale_until if stale else fresh_until):
                data = self._data
                data[k] = data.pop(k)  # now the most recently used
                if count:  # (count_hit, inline: every credential's cache hit passes here)
                    self.hits += 1
                    if self._stats is not None:
                        self._stats.hit.inc()
                return value
            if now >= stale_until:
                del self._data[k]
        if not count:
            return None
        self.misses += 1
        if self._stats is not None:
            self._stats.miss.inc()
        return None

    def count_hit(self) -> None:
        self.hits += 1
        if self._stats is not None:
            self._stats.hit.inc()

    def put(self, key: K, value: V, fresh_until: float, stale_until: float | None = None) -> None:
        if self._deadline is not None:
            raise TypeError("a cache with a deadline function is filled with add()")
        self._store(key, (value, fresh_until, max(fresh_until, stale_until or fresh_until)))

    def add(self, key: K, value: V) -> None:
        """Keep ``value`` until the deadline the cache's ``deadline`` gives it."""
        if self._deadline is None:
            raise TypeError("add() is for a cache with a deadline function; use put()")
        self._store(key, value)

    def _store(self, key: K, stored: Any) -> None:
        if self.maxsize <= 0:
            return
        k: Hashable = key if self._key is None else self._key(key)
        data = self._data
        data.pop(k, None)  # a replaced entry counts as just used
        data[k] = stored
        if len(data) > self.maxsize:
            # SECURITY: bounded memory whatever a client sends: the oldest sixteenth goes (at
            # least one entry), in insertion order, which a hit renews.
            for old in list(islice(data, max(1, self.maxsize // 16))):
                del data[old]

    def peek(self, key: K) -> V | None:
        """The value of ``key`` whatever its deadlines, without counting a hit or a miss."""
        entry = self._data.get(key if self._key is None else self._key(key))
        return self._entry(entry)[0] if entry is not None else None

    def fresh_until(self, key: K) -> float:
        """The fresh deadline of ``key``'s entry, 0.0 when there is none: until then what it
        holds may be used as if it had just been looked up."""
        entry = self._data.get(key if self._key is None else self._key(key))
        return self._entry(entry)[1] if entry is not None else 0.0

    def attach(self, stats: CacheStats) -> None:
        """Count hits and misses in these (pre-bound) metric children from now on."""
        self._stats = stats

    def discard(self, key: K) -> None:
        self._data.pop(key if self._key is None else self._key(key), None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
