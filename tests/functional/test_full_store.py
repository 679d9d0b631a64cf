"""A full Redis (``maxmemory`` reached under ``noeviction``, what operations.md advises) refuses
writes: every request that writes answers 503 ``service_unavailable``, never another 5xx, reads
go on, and once Redis has room again a token issued before is consumed exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from gateway.stores.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support import RedisServer

SCORES = "/v1/users/usr_a/scores"


@pytest.fixture
def redis_full() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_full_redis_is_503_on_writes_and_consumes_once_when_it_has_room(
    make_gateway: GatewayFactory, redis_full: RedisServer
) -> None:
    gw = await make_gateway(store=RedisStore(redis_full.url))
    key = await gw.key()
    async with gw.client.post(
        "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=bearer(key)
    ) as r:
        assert r.status == 200
        issued = (await r.json())["token"]

    admin = aioredis.Redis.from_url(redis_full.url)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")  # below what it holds: full
        async with gw.client.post(
            "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=bearer(key)
        ) as r:
            assert r.status == 503
            assert (await r.json())["error"] == "service_unavailable"
        async with gw.client.post("/v1/sdk/initialize", headers=bearer(issued)) as r:
            assert r.status == 503  # consuming writes: refused, and the token not used up
            assert (await r.json())["error"] == "service_unavailable"
        gw.clock.advance(2)  # past api_keys.cache_ttl: the key is read from Redis
        async with gw.client.get(SCORES, headers=bearer(key)) as r:
            assert r.status == 200  # a key lookup only reads
        await admin.config_set("maxmemory", "0")
    finally:
        await admin.aclose()

    async with gw.client.post("/v1/sdk/initialize", headers=bearer(issued)) as r:
        assert r.status == 200
    async with gw.client.post("/v1/sdk/initialize", headers=bearer(issued)) as r:
        assert r.status == 401
        assert (await r.json())["details"]["reason"] == "used"
