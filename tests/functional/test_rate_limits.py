"""Rate limits: headers, 429, reset, shared across replicas, store failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import ADMIN_TOKEN, GatewayProcess, Recorder, RedisServer, base_url, write_config

SCORES = "/v1/users/usr_a/scores"
LIMITS = {"rules": [{"group": "default", "per": "credential", "limit": 3, "period": "10s"}]}


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store
) -> Gateway:
    url = base_url(upstream[1])
    return await make_gateway(settings=make_settings(url, rate_limits=LIMITS), store=store)


async def test_budget_headers_429_and_reset(gw: Gateway) -> None:
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    remaining = []
    for _ in range(3):
        response = await gw.client.get(SCORES, headers=auth)
        assert response.status == 200
        assert response.headers["RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    response = await gw.client.get(SCORES, headers=auth)
    body = await response.json()
    assert (response.status, body["error"]) == (429, "rate_limited")
    assert int(response.headers["Retry-After"]) in (3, 4)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert len(gw.recorder.seen) == 3
    # Another credential has its own budget.
    other = await gw.key()
    assert (await gw.client.get(SCORES, headers={"Authorization": f"Bearer {other}"})).status == 200
    # The budget refills with time (one request every period / limit).
    gw.clock.advance(10 / 3 + 0.01)  # the store counts in milliseconds
    assert (await gw.client.get(SCORES, headers=auth)).status == 200
    assert (await gw.client.get(SCORES, headers=auth)).status == 429
    gw.clock.advance(10)
    for _ in range(3):
        assert (await gw.client.get(SCORES, headers=auth)).status == 200


async def test_limits_apply_per_route_group(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            rate_limits={
                "rules": [{"group": "auth", "per": "account", "limit": 1, "period": "1m"}]
            },
        )
    )
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(5):
        assert (await gw.client.get(SCORES, headers=auth)).status == 200  # group default: free
    first = await gw.client.post("/v1/auth/user-token", json={"user_id": "usr_a"}, headers=auth)
    assert first.status == 200
    second = await gw.client.post("/v1/auth/user-token", json={"user_id": "usr_a"}, headers=auth)
    assert second.status == 429


@pytest.mark.parametrize(("policy", "status"), [("deny", 503), ("allow", 200)])
async def test_store_down(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    redis_server: RedisServer,
    redis_url: str,
    policy: str,
    status: int,
) -> None:
    url = base_url(upstream[1])
    store = RedisStore(redis_url, prefix="rl-down:", timeout=0.2)
    gw = await make_gateway(
        store=store,
        settings=make_settings(
            url, rate_limits={**LIMITS, "on_store_error": policy}, api_keys={"stale_window": "60s"}
        ),
    )
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    assert (await gw.client.get(SCORES, headers=auth)).status == 200
    redis_server.stop()
    try:
        response = await gw.client.get(SCORES, headers=auth)
        assert response.status == status
        metrics = gw.runtime.metrics.rate_limit_store_failures.labels(policy)._value.get()
        assert metrics == 1
    finally:
        redis_server.start()


async def test_two_replicas_share_one_budget(
    tmp_path: Path, redis_url: str, upstream: tuple[Recorder, TestServer]
) -> None:
    url = base_url(upstream[1])
    extra = {
        "rate_limits": {
            "rules": [{"group": "default", "per": "account", "limit": 10, "period": "1m"}]
        }
    }
    replicas: list[GatewayProcess] = [
        write_config(tmp_path, url, store=redis_url, name="shared-rl", extra=extra)
        for _ in range(2)
    ]
    try:
        for proc in replicas:
            await asyncio.to_thread(proc.start)
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"http://127.0.0.1:{replicas[0].admin_port}/admin/keys",
                json={"account": "acc_rl"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as r:
                key = (await r.json())["key"]
            statuses = []
            for i in range(16):
                async with s.get(
                    replicas[i % 2].base + SCORES, headers={"Authorization": f"Bearer {key}"}
                ) as r:
                    statuses.append(r.status)
        assert statuses.count(200) == 10 and statuses.count(429) == 6
        assert statuses[:10] == [200] * 10
    finally:
        for proc in replicas:
            proc.stop()


async def test_token_kinds_are_budgeted_per_user_pair_or_person(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], aiohttp_server: Any
) -> None:
    """``per: credential`` for tokens: the budget belongs to the user (user tokens, SDK
    sessions), the member/caregiver pair (member tokens) or the person (team sessions), so
    minting a fresh token never buys a fresh budget, and one user cannot spend another's."""
    from tests.functional.test_team_sessions import AUDIENCE, ISSUER, IdentityProvider

    idp = IdentityProvider()
    idp_server = await aiohttp_server(idp.app())
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            rate_limits=LIMITS,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": str(idp_server.make_url("/.well-known/jwks.json")),
                    "account_claim": "account",
                    "actor_claim": "sub",
                }
            ],
        )
    )
    key, record = await gw.runtime.keys.create("acc_1", "live")

    async def post(path: str, credential: str, **kw: Any) -> Any:
        response = await gw.client.post(
            path, headers={"Authorization": f"Bearer {credential}"}, **kw
        )
        assert response.status == 200, await response.text()
        return await response.json()

    async def status(credential: str, path: str) -> int:
        response = await gw.client.get(path, headers={"Authorization": f"Bearer {credential}"})
        return response.status

    def spent(credential: str, path: str) -> Any:
        return asyncio.gather(*(status(credential, path) for _ in range(3)))

    a_scores, b_scores = "/v1/users/usr_a/scores", "/v1/users/usr_b/scores"
    # User tokens: two tokens of usr_a share one budget; usr_b and the key have their own.
    first = (await post("/v1/auth/user-token", key, json={"user_id": "usr_a"}))["token"]
    second = (await post("/v1/auth/user-token", key, json={"user_id": "usr_a"}))["token"]
    other = (await post("/v1/auth/user-token", key, json={"user_id": "usr_b"}))["token"]
    assert first != second
    assert await spent(first, a_scores) == [200, 200, 200]
    assert await status(second, a_scores) == 429
    assert await status(other, b_scores) == 200
    assert await status(key, a_scores) == 200
    # SDK sessions: per user too, apart from that user's user tokens.
    sessions = []
    for _ in range(2):
        mobile = (await post("/v1/auth/mobile-token", key, json={"user_id": "usr_a"}))["token"]
        sessions.append((await post("/v1/sdk/initialize", mobile))["session_token"])
    assert await spent(sessions[0], "/v1/sdk/config") == [200, 200, 200]
    assert await status(sessions[1], "/v1/sdk/config") == 429
    # Member tokens: per (subject, actor); the caregiver's budget is not the member's.
    now = int(gw.clock.now())

    def member(jti: str, **claims: Any) -> str:
        body = {"sub": "usr_a", "iat": now, "exp": now + 300, "scopes": [], "jti": jti, **claims}
        return jwt.encode(body, key.encode(), "HS256", headers={"kid": record.key_id})

    await gw.runtime.store.set_relationship("acc_1", "usr_a", "usr_c", True)
    assert await spent(member("m1"), a_scores) == [200, 200, 200]
    assert await status(member("m2"), a_scores) == 429
    assert await status(member("c1", act="usr_c"), a_scores) == 200
    # Team sessions: per person.
    alice = idp.token(now=now, sub="alice@example.test")
    assert await spent(alice, a_scores) == [200, 200, 200]
    assert await status(idp.token(now=now + 1, sub="alice@example.test"), a_scores) == 429
    assert await status(idp.token(now=now, sub="bob@example.test"), a_scores) == 200
