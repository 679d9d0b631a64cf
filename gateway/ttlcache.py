"""A bounded LRU map whose entries expire: the verification caches of every credential kind.

Each entry has a *fresh* deadline (after which it must not be used to admit anyone) and an
optional later *stale* deadline (used only when an operator configured a stale-cache window and
the store is unreachable). Memory is bounded by ``maxsize``: the least recently used entry goes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from gateway.observe.metrics import CacheStats

StatsFactory = Callable[[str], "CacheStats"]
K = TypeVar("K")
V = TypeVar("V")


def token_key(token: str) -> bytes:
    """A credential as a verification cache keeps it: its SHA-256 digest (32 bytes), not the
    token. A cached JWT is a few hundred bytes; 100,000 of them held whole were a third of a
    worker's memory. And a process's memory then holds no reusable credential."""
    return hashlib.sha256(token.encode()).digest()


class TTLCache(Generic[K, V]):
    """``key`` (None: the key itself) maps every key before it is stored or looked up (the
    credential caches pass :func:`token_key`)."""

    __slots__ = ("_data", "_key", "_stats", "hits", "maxsize", "misses")

    def __init__(
        self,
        maxsize: int,
        stats: CacheStats | None = None,
        key: Callable[[K], Hashable] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, tuple[V, float, float]] = OrderedDict()
        self._stats = stats
        self._key = key
        self.hits = 0
        self.misses = 0

    def get(self, key: K, now: float, *, stale: bool = False) -> V | None:
        k: Hashable = key if self._key is None else self._key(key)
        entry = self._data.get(k)
        if entry is not None:
            value, fresh_until, stale_until = entry
            if now < (stale_until if stale else fresh_until):
                self._data.move_to_end(k)
                self.hits += 1
                if self._stats is not None:
                    self._stats.hit.inc()
                return value
            if now >= stale_until:
                del self._data[k]
        self.misses += 1
        if self._stats is not None:
            self._stats.miss.inc()
        return None

    def put(self, key: K, value: V, fresh_until: float, stale_until: float | None = None) -> None:
        if self.maxsize <= 0:
            return
        k: Hashable = key if self._key is None else self._key(key)
        self._data[k] = (value, fresh_until, max(fresh_until, stale_until or fresh_until))
        self._data.move_to_end(k)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def peek(self, key: K) -> V | None:
        """The value of ``key`` whatever its deadlines, without counting a hit or a miss."""
        entry = self._data.get(key if self._key is None else self._key(key))
        return entry[0] if entry is not None else None

    def fresh_until(self, key: K) -> float:
        """The fresh deadline of ``key``'s entry, 0.0 when there is none: until then what it
        holds may be used as if it had just been looked up."""
        entry = self._data.get(key if self._key is None else self._key(key))
        return entry[1] if entry is not None else 0.0

    def attach(self, stats: CacheStats) -> None:
        """Count hits and misses in these (pre-bound) metric children from now on."""
        self._stats = stats

    def discard(self, key: K) -> None:
        self._data.pop(key if self._key is None else self._key(key), None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
