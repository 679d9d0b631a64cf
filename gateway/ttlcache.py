"""A bounded LRU map whose entries expire: the verification caches of every credential kind.

Each entry has a *fresh* deadline (after which it must not be used to admit anyone) and an
optional later *stale* deadline (used only when an operator configured a stale-cache window and
the store is unreachable). Memory is bounded by ``maxsize``: the least recently used entry goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from gateway.observe.metrics import CacheStats

StatsFactory = Callable[[str], "CacheStats"]
K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    __slots__ = ("_data", "_stats", "hits", "maxsize", "misses")

    def __init__(self, maxsize: int, stats: CacheStats | None = None) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, tuple[V, float, float]] = OrderedDict()
        self._stats = stats
        self.hits = 0
        self.misses = 0

    def get(self, key: K, now: float, *, stale: bool = False) -> V | None:
        entry = self._data.get(key)
        if entry is not None:
            value, fresh_until, stale_until = entry
            if now < (stale_until if stale else fresh_until):
                self._data.move_to_end(key)
                self.hits += 1
                if self._stats is not None:
                    self._stats.hit.inc()
                return value
            if now >= stale_until:
                del self._data[key]
        self.misses += 1
        if self._stats is not None:
            self._stats.miss.inc()
        return None

    def put(self, key: K, value: V, fresh_until: float, stale_until: float | None = None) -> None:
        if self.maxsize <= 0:
            return
        self._data[key] = (value, fresh_until, max(fresh_until, stale_until or fresh_until))
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def peek(self, key: K) -> V | None:
        """The value of ``key`` whatever its deadlines, without counting a hit or a miss."""
        entry = self._data.get(key)
        return entry[0] if entry is not None else None

    def fresh_until(self, key: K) -> float:
        """The fresh deadline of ``key``'s entry, 0.0 when there is none: until then what it
        holds may be used as if it had just been looked up."""
        entry = self._data.get(key)
        return entry[1] if entry is not None else 0.0

    def attach(self, stats: CacheStats) -> None:
        """Count hits and misses in these (pre-bound) metric children from now on."""
        self._stats = stats

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
