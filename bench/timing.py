"""Timing of failed API-key lookups: does a near miss cost what a far miss costs?

    python bench/timing.py [--rounds 20000] [--store memory|redis]

A near miss is a real key with its last character changed; a far miss shares nothing with any
key. Both are looked up by the SHA-256 digest of the whole key (``tests/security/test_timing.py``
shows that deterministically), so the medians should differ by noise only. The attempts are
interleaved, so drift on a busy machine hits both alike. Prints the medians, their difference
and the 10th/90th percentiles; never part of the test suite (a statistical bound loose enough not
to flake on a shared machine cannot see a real difference either).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import ApiKeySettings  # noqa: E402
from gateway.errors import InvalidToken  # noqa: E402
from gateway.keys.sealing import Sealer  # noqa: E402
from gateway.keys.service import KeyService  # noqa: E402
from gateway.stores.base import Store  # noqa: E402
from gateway.stores.memory import MemoryStore  # noqa: E402
from tests.support import FakeClock, free_port, wait_for_port  # noqa: E402


async def timings(attempts: list[Callable[[], Awaitable[object]]], rounds: int) -> list[list[int]]:
    samples: list[list[int]] = [[] for _ in attempts]
    for _ in range(rounds):
        for i, attempt in enumerate(attempts):
            started = time.perf_counter_ns()
            with contextlib.suppress(InvalidToken):
                await attempt()
            samples[i].append(time.perf_counter_ns() - started)
    return samples


def flip_last(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def summary(name: str, ns: list[int]) -> str:
    deciles = statistics.quantiles(ns, n=10)
    return (
        f"{name:5} median {statistics.median(ns) / 1000:8.2f} µs   "
        f"p10 {deciles[0] / 1000:8.2f} µs   p90 {deciles[-1] / 1000:8.2f} µs"
    )


async def measure(store: Store, rounds: int) -> None:
    keys = KeyService(store, Sealer(os.urandom(32)), FakeClock(), ApiKeySettings(), cache_size=0)
    for _ in range(50):
        await keys.create("acc_1", "live")
    real, _ = await keys.create("acc_1", "live")
    near = flip_last(real)
    far = "sk_live_" + "".join(secrets.choice("abcdefXYZ0123") for _ in range(len(real) - 8))
    near_ns, far_ns = await timings(
        [lambda: keys.authenticate(near), lambda: keys.authenticate(far)], rounds
    )
    print(summary("near", near_ns))
    print(summary("far", far_ns))
    gap = statistics.median(near_ns) - statistics.median(far_ns)
    print(f"median near - far: {gap / 1000:+.2f} µs over {rounds} interleaved rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    args = parser.parse_args()
    if args.store == "memory":
        asyncio.run(measure(MemoryStore(), args.rounds))
        return
    from gateway.stores.redis import RedisStore

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)

        async def with_redis() -> None:
            store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="bench-timing:")
            try:
                await measure(store, args.rounds)
            finally:
                await store.close()

        asyncio.run(with_redis())
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
