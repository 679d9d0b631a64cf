"""The budget of failed authentications per client address (``abuse``), through the real gateway,
on both stores: 429 before any credential lookup, per address, shared by replicas, in proxy and
decision mode."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from gateway.keys.sealing import new_master_key
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import RedisServer, base_url

SCORES = "/v1/users/usr_a/scores"
# Three failures at once, then one every 10 s. The test client connects from 127.0.0.1, which
# is trusted here so that X-Forwarded-For can stand for clients at other addresses.
ABUSE = {
    "enabled": True,
    "failures_per_minute": 6,
    "burst": 3,
    "trusted_proxies": ["127.0.0.1/32"],
}
ATTACKER = "203.0.113.7"
OTHER = "198.51.100.9"


def from_(address: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": f"6.6.6.6, {address}"}  # the left entry is the client's lie
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def unknown_key() -> str:
    return "sk_live_" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


async def error(response: ClientResponse) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["error"]


def counter(gw: Gateway, name: str, **labels: str) -> float:
    gw.runtime.metrics.flush()
    return gw.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store
) -> Gateway:
    url = base_url(upstream[1])
    return await make_gateway(settings=make_settings(url, url, abuse=ABUSE), store=store)


async def test_failures_past_the_budget_are_429_before_any_credential_lookup(gw: Gateway) -> None:
    valid = await gw.key()
    for _ in range(3):
        response = await gw.client.get(SCORES, headers=from_(ATTACKER, unknown_key()))
        assert await error(response) == (401, "invalid_token")
    lookups = counter(gw, "gateway_cache_lookups_total", cache="api_key", result="miss")
    response = await gw.client.get(SCORES, headers=from_(ATTACKER, unknown_key()))
    body = await response.json()
    assert (response.status, body["error"]) == (429, "rate_limited")
    assert body["details"]["reason"] == "failed_authentications"
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert "WWW-Authenticate" not in response.headers
    # Past the budget the address is refused whatever it sends, its credential unread: no key
    # lookup happened for these (each unknown key would be a cache miss and a store read).
    assert (await gw.client.get(SCORES, headers=from_(ATTACKER, valid))).status == 429
    assert (await gw.client.get(SCORES, headers=from_(ATTACKER))).status == 429
    assert counter(gw, "gateway_cache_lookups_total", cache="api_key", result="miss") == lookups
    assert gw.recorder.seen == []
    # Another address is not starved by these failures: its valid key works, and its own
    # failures have their own budget.
    assert (await gw.client.get(SCORES, headers=from_(OTHER, valid))).status == 200
    assert (await gw.client.get(SCORES, headers=from_(OTHER, unknown_key()))).status == 401
    assert counter(gw, "gateway_abuse_failures_total") == 4
    assert counter(gw, "gateway_abuse_refused_total") == 3
    # The budget refills at failures_per_minute: one failure every 10 s.
    gw.clock.advance(10.01)  # the store counts in milliseconds
    assert (await gw.client.get(SCORES, headers=from_(ATTACKER, unknown_key()))).status == 401
    assert (await gw.client.get(SCORES, headers=from_(ATTACKER, valid))).status == 429
    gw.clock.advance(30)
    assert (await gw.client.get(SCORES, headers=from_(ATTACKER, valid))).status == 200


async def test_missing_credentials_count_valid_ones_do_not(gw: Gateway) -> None:
    valid = await gw.key()
    for _ in range(10):  # valid credentials never spend the budget
        assert (await gw.client.get(SCORES, headers=from_(ATTACKER, valid))).status == 200
    for _ in range(3):
        assert await error(await gw.client.get(SCORES, headers=from_(ATTACKER))) == (
            401,
            "invalid_token",
        )
    assert await error(await gw.client.get(SCORES, headers=from_(ATTACKER))) == (
        429,
        "rate_limited",
    )


async def test_refusals_of_valid_credentials_do_not_count(gw: Gateway) -> None:
    key = await gw.key()
    issued = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=from_(ATTACKER, key)
    )
    assert issued.status == 200, await issued.text()
    token = (await issued.json())["token"]
    for _ in range(10):  # 403: the credential is valid, its own rate limits apply
        response = await gw.client.get("/v1/users/usr_b/scores", headers=from_(ATTACKER, token))
        assert await error(response) == (403, "wrong_user")
    assert counter(gw, "gateway_abuse_failures_total") == 0


async def test_x_forwarded_for_is_ignored_from_untrusted_peers(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    url = base_url(upstream[1])
    untrusted = {**ABUSE, "trusted_proxies": ["10.0.0.0/8"]}
    gw = await make_gateway(settings=make_settings(url, url, abuse=untrusted))
    # Each request claims another address; all are counted for the socket's, 127.0.0.1.
    statuses = [
        (await gw.client.get(SCORES, headers=from_(f"192.0.2.{i}"))).status for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]


async def test_replicas_share_the_budget_through_redis(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], redis_url: str
) -> None:
    url = base_url(upstream[1])
    prefix = f"abuse{uuid.uuid4().hex[:8]}:"
    # One master key, as replicas have: with one each, the first to look at the store claims it
    # and the other cannot create keys there.
    settings = make_settings(url, url, abuse=ABUSE, master_key=new_master_key())
    # Two replicas: their own runtimes and Redis connections, one Redis.
    a = await make_gateway(settings=settings, store=RedisStore(redis_url, prefix=prefix))
    b = await make_gateway(settings=settings, store=RedisStore(redis_url, prefix=prefix))
    valid = await a.key()
    for _ in range(3):
        response = await a.client.get(SCORES, headers=from_(ATTACKER, unknown_key()))
        assert response.status == 401
    assert (await a.client.get(SCORES, headers=from_(ATTACKER, valid))).status == 429
    # b never saw this address: it asks the store, where a spent the budget.
    assert await error(await b.client.get(SCORES, headers=from_(ATTACKER, valid))) == (
        429,
        "rate_limited",
    )
    assert (await b.client.get(SCORES, headers=from_(OTHER, valid))).status == 200
    # b found OTHER within budget a moment ago and remembers it for up to a second; a spends
    # OTHER's budget meanwhile. b lets at most one more failure through: that one is recorded
    # in the store, whose answer makes b refuse the next.
    for _ in range(3):
        response = await a.client.get(SCORES, headers=from_(OTHER, unknown_key()))
        assert response.status == 401
    statuses = [
        (await b.client.get(SCORES, headers=from_(OTHER, unknown_key()))).status for _ in range(3)
    ]
    assert statuses == [401, 429, 429]
    for replica in (a, b):
        await replica.runtime.store.close()


async def test_requests_sent_at_once_cannot_outrun_the_budget(gw: Gateway) -> None:
    """The check before authentication only reads the budget; a failure is counted after. 200
    bad keys sent at once from one address all passed the check (the store said "within
    budget" to each before any failure was written): 189 failures in the first wave, 200 in
    each wave after. Now an address's requests wait their turn: the burst, and no more."""
    valid = await gw.key()

    async def wave(size: int) -> list[int]:
        requests = [
            gw.client.get(SCORES, headers=from_(ATTACKER, unknown_key())) for _ in range(size)
        ]
        return sorted([r.status for r in await asyncio.gather(*requests)])

    assert await wave(40) == [401] * 3 + [429] * 37
    assert counter(gw, "gateway_abuse_failures_total") == 3
    gw.clock.advance(10.01)  # one failure more allowed
    assert await wave(40) == [401] + [429] * 39
    # Valid credentials sent at once from another address are not held back.
    statuses = await asyncio.gather(
        *(gw.client.get(SCORES, headers=from_(OTHER, valid)) for _ in range(20))
    )
    assert [r.status for r in statuses] == [200] * 20
    assert counter(gw, "gateway_abuse_failures_total") == 4


@pytest.mark.parametrize(("policy", "statuses"), [("deny", [401, 503]), ("allow", [401, 401])])
async def test_a_store_that_refuses_writes_keeps_the_budget_closed(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    policy: str,
    statuses: list[int],
) -> None:
    """A full Redis (maxmemory with noeviction, the policy operations.md asks for) refuses the
    write that counts a failure and still answers the read that checks the budget: every
    address was always within budget, failing without limit. With ``deny`` an address whose
    failure was not recorded now gets 503 from this process for a second."""
    redis = RedisServer()
    url = base_url(upstream[1])
    store = RedisStore(redis.url, prefix=f"abuse-full{uuid.uuid4().hex[:6]}:")
    try:
        gw = await make_gateway(
            store=store,
            settings=make_settings(url, url, abuse={**ABUSE, "on_store_error": policy}),
        )
        await store.client.config_set("maxmemory", "1")  # full from now on
        seen = [
            (await gw.client.get(SCORES, headers=from_(ATTACKER, unknown_key()))).status
            for _ in range(2)
        ]
        assert seen == statuses
        gw.clock.advance(1.01)  # a second later, one more failure may be tried
        assert (await gw.client.get(SCORES, headers=from_(ATTACKER))).status == 401
        assert counter(gw, "gateway_abuse_store_failures_total", policy=policy) >= 2
        assert gw.recorder.seen == []
    finally:
        await store.close()
        redis.stop()


@pytest.mark.parametrize(("policy", "status"), [("deny", 503), ("allow", 401)])
async def test_store_down(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    redis_server: RedisServer,
    redis_url: str,
    policy: str,
    status: int,
) -> None:
    url = base_url(upstream[1])
    store = RedisStore(redis_url, prefix=f"abuse-down{uuid.uuid4().hex[:6]}:", timeout=0.2)
    gw = await make_gateway(
        store=store,
        settings=make_settings(url, url, abuse={**ABUSE, "on_store_error": policy}),
    )
    redis_server.stop()
    try:
        # A request without a credential: the budget check is the only thing needing Redis.
        response = await gw.client.get(SCORES, headers=from_(ATTACKER))
        assert response.status == status
        assert gw.recorder.seen == []
        gw.runtime.metrics.flush()
        failures = gw.runtime.metrics.registry.get_sample_value(
            "gateway_abuse_store_failures_total", {"policy": policy}
        )
        assert failures is not None and failures >= 1
    finally:
        redis_server.start()
    await store.close()


async def test_off_by_default(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(settings=make_settings(url, url))
    assert gw.runtime.failure_budget is None
    statuses = {(await gw.client.get(SCORES, headers=from_(ATTACKER))).status for _ in range(40)}
    assert statuses == {401}


DECISION_STYLES = {
    "nginx": {"X-Original-Method": "GET", "X-Original-URI": SCORES},
    "ingress-nginx": {"X-Original-Method": "GET", "X-Original-URL": f"https://api.test{SCORES}"},
    "traefik": {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": SCORES},
}


@pytest.mark.parametrize("style", sorted(DECISION_STYLES))
async def test_decision_mode_counts_the_front_proxys_client(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store, style: str
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(url, url, abuse=ABUSE, decision={"enabled": True, "proxy": style}),
        store=store,
    )
    valid = await gw.key()
    ask = DECISION_STYLES[style]

    async def decide(address: str, token: str | None) -> int:
        response = await gw.client.get("/decisions", headers={**ask, **from_(address, token)})
        return response.status

    assert [await decide(ATTACKER, unknown_key()) for _ in range(4)] == [401, 401, 401, 429]
    assert await decide(ATTACKER, valid) == 429
    assert await decide(OTHER, valid) == 200
