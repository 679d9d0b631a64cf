"""Lookups take the same time for near-misses and far-misses: a statistical test with a generous
bound. Keys are found by the SHA-256 digest of the whole key, so a near-miss shares no prefix of
what is looked up; key ids are looked up whole in a dictionary."""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

from gateway.config import ApiKeySettings
from gateway.errors import InvalidToken
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.stores.memory import MemoryStore
from tests.support import FakeClock

ROUNDS = 3000


async def timings(attempts: list[Callable[[], Awaitable[object]]]) -> list[list[float]]:
    """Interleaved, so drift on a noisy machine hits every kind alike."""
    samples: list[list[float]] = [[] for _ in attempts]
    for _ in range(ROUNDS):
        for i, attempt in enumerate(attempts):
            started = time.perf_counter_ns()
            with contextlib.suppress(InvalidToken):
                await attempt()
            samples[i].append(time.perf_counter_ns() - started)
    return samples


def assert_alike(near: list[float], far: list[float]) -> None:
    a, b = statistics.median(near), statistics.median(far)
    # Generous: a timing oracle needs a consistent gap; noise on a shared machine is allowed.
    assert abs(a - b) <= max(0.35 * min(a, b), 3_000), (a, b)


def flip_last(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


async def test_key_lookup_near_and_far_misses_take_the_same_time() -> None:
    keys = KeyService(
        MemoryStore(), Sealer(os.urandom(32)), FakeClock(), ApiKeySettings(), cache_size=0
    )
    for _ in range(50):
        await keys.create("acc_1", "live")
    real, _ = await keys.create("acc_1", "live")
    near = flip_last(real)
    far = "sk_live_" + "".join(secrets.choice("abcdefXYZ0123") for _ in range(43))
    assert len(near) == len(far) == len(real)
    near_t, far_t = await timings([lambda: keys.authenticate(near), lambda: keys.authenticate(far)])
    assert_alike(near_t, far_t)


async def test_kid_lookup_near_and_far_misses_take_the_same_time() -> None:
    keys = KeyService(
        MemoryStore(), Sealer(os.urandom(32)), FakeClock(), ApiKeySettings(), cache_size=0
    )
    _, record = await keys.create("acc_1", "live")
    near = record.key_id[:-1] + ("0" if record.key_id[-1] != "0" else "1")
    far = "key_" + secrets.token_hex(12)
    near_t, far_t = await timings([lambda: keys.active_by_id(near), lambda: keys.active_by_id(far)])
    assert_alike(near_t, far_t)
