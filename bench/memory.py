"""Memory of a running gateway: streaming large bodies, and a soak of mixed credentials.

    python bench/memory.py stream [--megabytes 200]
    python bench/memory.py soak [--seconds 60]

``stream`` sends a body of that size through ``gateway serve`` to a recording upstream and
downloads one of the same size back, and prints the gateway's resident set before and its peak
after (target: the peak grows by less than 64 MiB while 400 MB cross it). ``soak`` drives
``gateway serve`` on Redis with 32 concurrent clients rotating an API key, a user token, a member
token and a bad token, samples the resident set every tenth of the run, and prints the growth
after the first sample past warm-up (target: less than 16 MiB). Speed and memory are measured
here, never asserted in the test suite (which checks that the bytes arrive and the statuses).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    RedisServer,
    ThreadedUpstream,
    admin_create_key,
    rss_kib,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"


def verdict(growth_kib: int, target_mib: int) -> str:
    return f"{growth_kib / 1024:.1f} MiB (target < {target_mib} MiB: " + (
        "met)" if growth_kib < target_mib * 1024 else "MISSED)"
    )


async def stream(megabytes: int) -> None:
    upstream = ThreadedUpstream()
    proc = write_config(
        Path(tempfile.mkdtemp(prefix="bench-memory-")),
        upstream.url,
        extra={"limits": {"max_body_bytes": 1 << 40}, "log_level": "WARNING"},
    )
    proc.start()
    try:
        assert proc.proc is not None
        key = admin_create_key(proc, "acc_1")
        auth = {"Authorization": f"Bearer {key}"}
        total = megabytes * 1024 * 1024
        baseline = rss_kib(proc.proc.pid)[0]

        async def body() -> AsyncIterator[bytes]:
            chunk = b"z" * (1 << 20)
            for _ in range(megabytes):
                yield chunk

        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            started = time.monotonic()
            async with s.post(proc.base + "/v1/users", data=body(), headers=auth) as r:
                assert r.status == 200 and (await r.json())["received"] == total
            up = time.monotonic() - started
            received, started = 0, time.monotonic()
            async with s.get(proc.base + SCORES + f"?bytes={total}", headers=auth) as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    received += len(chunk)
            down = time.monotonic() - started
        assert received == total
        current, peak = rss_kib(proc.proc.pid)
        print(f"stream: {megabytes} MB up in {up:.1f} s, {megabytes} MB down in {down:.1f} s")
        print(f"rss KiB: before {baseline}, after {current}, peak {peak}")
        print(f"peak growth: {verdict(peak - baseline, 64)}")
    finally:
        proc.stop()
        upstream.stop()


async def soak(seconds: float) -> None:
    redis = RedisServer()
    upstream = ThreadedUpstream()
    proc = write_config(
        Path(tempfile.mkdtemp(prefix="bench-soak-")),
        upstream.url,
        store=redis.url,
        name="soak",
        extra={"workers": 1, "log_level": "WARNING"},
    )
    proc.start()
    try:
        assert proc.proc is not None
        pid = proc.proc.pid
        key = admin_create_key(proc, "acc_1")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            auth = {"Authorization": f"Bearer {key}"}
            async with s.post(
                proc.base + "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=auth
            ) as r:
                user = (await r.json())["token"]
            key_id = jwt.decode(user, options={"verify_signature": False})["kid"]
            now = int(time.time())
            member = jwt.encode(
                {"sub": "usr_a", "iat": now, "exp": now + 86000, "scopes": []},
                key.encode(),
                algorithm="HS256",
                headers={"kid": key_id},
            )
            credentials = [key, user, member, user + "x"]
            statuses: Counter[int] = Counter()
            rss: list[int] = []
            deadline = time.monotonic() + seconds

            async def worker(i: int) -> None:
                n = i
                while time.monotonic() < deadline:
                    token = credentials[n % len(credentials)]
                    n += 1
                    async with s.get(
                        proc.base + SCORES, headers={"Authorization": f"Bearer {token}"}
                    ) as r:
                        await r.read()
                        statuses[r.status] += 1

            async def sampler() -> None:
                while time.monotonic() < deadline:
                    rss.append(rss_kib(pid)[0])
                    await asyncio.sleep(seconds / 10)

            await asyncio.gather(sampler(), *(worker(i) for i in range(32)))
        total = sum(statuses.values())
        print(f"soak: {total} requests in {seconds:.0f} s ({total / seconds:.0f}/s)")
        print(f"statuses: {dict(sorted(statuses.items()))}")
        print(f"rss KiB samples: {rss}")
        if len(rss) > 2:
            print(f"growth after warm-up: {verdict(rss[-1] - rss[1], 16)}")
    finally:
        proc.stop()
        upstream.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("stream")
    p.add_argument("--megabytes", type=int, default=200)
    p = sub.add_parser("soak")
    p.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if args.scenario == "stream":
        asyncio.run(stream(args.megabytes))
    else:
        asyncio.run(soak(args.seconds))


if __name__ == "__main__":
    main()
