"""Load, bounded in count and time, on loopback only (marked slow: `.ci/run` runs them as a
separate step)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.support import (
    GatewayProcess,
    ThreadedUpstream,
    admin_create_key,
    write_config,
)

pytestmark = pytest.mark.slow
SCORES = "/v1/users/usr_a/scores"


@pytest.fixture
def gateway(tmp_path: Path, redis_url: str) -> Iterator[tuple[GatewayProcess, str]]:
    upstream = ThreadedUpstream()
    proc = write_config(tmp_path, upstream.url, store=redis_url, name="load", extra={"workers": 1})
    proc.start()
    try:
        yield proc, admin_create_key(proc, "acc_1")
    finally:
        proc.stop()
        upstream.stop()


async def test_1000_concurrent_consumers_of_one_mobile_token_100_times(
    gateway: tuple[GatewayProcess, str],
) -> None:
    proc, key = gateway
    connector = aiohttp.TCPConnector(limit=1000)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        for round_ in range(100):
            async with s.post(
                proc.base + "/v1/auth/mobile-token",
                json={"user_id": "usr_a"},
                headers={"Authorization": f"Bearer {key}"},
            ) as r:
                token = (await r.json())["token"]
            gate = asyncio.Event()

            async def consume(token: str = token, gate: asyncio.Event = gate) -> int:
                await gate.wait()
                async with s.post(
                    proc.base + "/v1/sdk/initialize", headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    await r.read()
                    return r.status

            tasks = [asyncio.create_task(consume()) for _ in range(1000)]
            await asyncio.sleep(0)
            gate.set()
            statuses = Counter(await asyncio.gather(*tasks))
            assert statuses == {200: 1, 401: 999}, (round_, statuses)


async def test_soak_60s_mixed_credentials(gateway: tuple[GatewayProcess, str]) -> None:
    proc, key = gateway
    assert proc.proc is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        auth = {"Authorization": f"Bearer {key}"}
        async with s.post(
            proc.base + "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=auth
        ) as r:
            user = (await r.json())["token"]
        # The id of *this* key (Redis is shared across the session; other tests' keys may be
        # listed too): a user token names the API key it was issued under.
        key_id = jwt.decode(user, options={"verify_signature": False})["kid"]
        now = int(time.time())
        member = jwt.encode(
            {"sub": "usr_a", "iat": now, "exp": now + 3600, "scopes": []},
            key.encode(),
            algorithm="HS256",
            headers={"kid": key_id},
        )
        credentials = [key, user, member, user + "x"]  # the last is refused (401)
        statuses: Counter[int] = Counter()
        deadline = time.monotonic() + 60

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

        await asyncio.gather(*(worker(i) for i in range(32)))
    total = sum(statuses.values())
    assert not any(code >= 500 for code in statuses), statuses
    # Three credentials in four are valid, the fourth is refused.
    assert statuses[401] > 0 and statuses[200] > 2.5 * statuses[401]
    # Its memory over time is measured by `bench/memory.py soak`, not asserted here.
    assert proc.proc.poll() is None  # still serving
    print(f"soak: {total} requests in 60 s ({total / 60:.0f}/s), statuses {dict(statuses)}")
