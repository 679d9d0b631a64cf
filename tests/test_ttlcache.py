"""The verification caches' map (gateway/ttlcache.py): deadlines, the stale window, LRU order,
keys kept as digests, and deadlines derived from the value."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.ttlcache import TTLCache, token_key


def test_an_entry_is_fresh_until_its_deadline_and_stale_only_when_asked() -> None:
    cache: TTLCache[str, str] = TTLCache(10)
    cache.put("k", "v", fresh_until=10.0, stale_until=20.0)
    assert cache.get("k", 9.99) == "v"
    assert cache.get("k", 10.0) is None  # past fresh: not used to admit anyone
    assert cache.get("k", 15.0, stale=True) == "v"  # the store is down: the stale window
    assert cache.get("k", 20.0, stale=True) is None
    assert len(cache) == 0  # gone once past its stale deadline
    assert (cache.hits, cache.misses) == (2, 2)


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: TTLCache[str, int] = TTLCache(2)
    cache.put("a", 1, 100.0)
    cache.put("b", 2, 100.0)
    assert cache.get("a", 0.0) == 1  # a is now the most recent
    cache.put("c", 3, 100.0)
    assert cache.peek("b") is None and cache.peek("a") == 1 and cache.peek("c") == 3


def test_past_its_bound_the_least_recently_used_sixteenth_goes() -> None:
    # SECURITY: memory stays bounded whatever credentials a client sends.
    cache: TTLCache[int, int] = TTLCache(64)
    for i in range(64):
        cache.put(i, i, 100.0)
    assert cache.get(0, 0.0) == 0 and cache.get(1, 0.0) == 1  # used: now the most recent
    cache.put(64, 64, 100.0)  # one past the bound: the 4 least recently used go
    assert len(cache) == 61
    assert [i for i in range(65) if cache.peek(i) is None] == [2, 3, 4, 5]
    cache.put(1, 10, 100.0)  # replacing an entry counts as using it
    for i in range(65, 500):
        cache.put(i, i, 100.0)
        assert len(cache) <= 64
    assert cache.peek(499) == 499


def test_token_keys_are_digests_never_the_token() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfYSJ9.c2lnbmF0dXJl"
    cache: TTLCache[str, str] = TTLCache(10, key=token_key)
    cache.put(token, "principal", 100.0)
    assert cache.get(token, 0.0) == "principal"
    assert cache.fresh_until(token) == 100.0
    assert token not in cache._data and token_key(token) in cache._data
    assert 0 <= token_key(token) < 2**128 and token_key(token) != token_key(token + "x")
    assert cache.get(token + "x", 0.0) is None
    cache.discard(token)
    assert cache.peek(token) is None


@dataclass(frozen=True)
class Verified:
    expires_at: float


def test_a_deadline_derived_from_the_value() -> None:
    cache: TTLCache[str, Verified] = TTLCache(
        10, key=token_key, deadline=lambda v: v.expires_at + 5
    )
    cache.add("t", Verified(100.0))
    assert cache.get("t", 104.99) == Verified(100.0)
    assert cache.get("t", 105.0) is None
    cache.add("u", Verified(200.0))
    assert cache.fresh_until("u") == 205.0 and cache.peek("u") == Verified(200.0)
    stored = next(iter(cache._data.values()))
    assert stored == Verified(200.0)  # the bare value: no tuple of deadlines an entry
    with pytest.raises(TypeError):
        cache.put("v", Verified(1.0), 10.0)
    with pytest.raises(TypeError):
        TTLCache[str, str](10).add("w", "x")
