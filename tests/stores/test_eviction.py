"""A store that may evict keys when full is said (a WARNING line naming the policy, and
``gateway_store_evicting``), once for each finding; one that will not say (``INFO`` refused by
an ACL) is said once at INFO. On real ``redis-server`` processes, whose policy the tests change
with ``CONFIG SET`` as an operator (or a managed service) would."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.app import create_admin_app
from gateway.errors import StoreUnavailable
from gateway.keys import watch
from gateway.observe.metrics import Metrics
from gateway.stores.base import MemoryPolicy
from gateway.stores.eviction import EvictionWatch, describe
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.stores.conftest import topology_store
from tests.support import ClusterTopology, RedisServer


def said(log_lines: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    return [line for line in lines if "evict" in line["msg"]]


def evicting(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_store_evicting")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of this test's own, whose policy the test changes."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(server.url)
    yield store
    await store.close()


async def policy(store: RedisStore, maxmemory: str, name: str) -> None:
    await store.client.config_set("maxmemory", maxmemory)
    await store.client.config_set("maxmemory-policy", name)


async def test_an_evicting_policy_is_said_once_and_again_when_it_changes(
    store: RedisStore, log_lines: io.StringIO
) -> None:
    metrics = Metrics()
    watcher = EvictionWatch(metrics.store_evicting)
    await watcher.look(store)  # redis-server's default: no limit, noeviction
    assert evicting(metrics) == 0 and said(log_lines) == []

    await policy(store, "64mb", "allkeys-lru")
    await watcher.look(store)
    await watcher.look(store)  # the same finding: not said twice
    lines = said(log_lines)
    assert evicting(metrics) == 1
    assert [(line["level"], line["policy"]) for line in lines] == [
        ("warning", "allkeys-lru (maxmemory 67108864 bytes)")
    ]
    assert "noeviction" in lines[0]["msg"]

    await policy(store, "64mb", "volatile-ttl")  # changed at run time: said again
    await watcher.look(store)
    assert [line["policy"] for line in said(log_lines)][1:] == [
        "volatile-ttl (maxmemory 67108864 bytes)"
    ]

    await policy(store, "64mb", "noeviction")  # put right
    await watcher.look(store)
    assert evicting(metrics) == 0 and len(said(log_lines)) == 2

    await policy(store, "0", "allkeys-lru")  # no limit: nothing is ever evicted
    await watcher.look(store)
    assert evicting(metrics) == 0 and len(said(log_lines)) == 2

    await policy(store, "64mb", "allkeys-lru")  # evicting again after it was put right
    await watcher.look(store)
    assert evicting(metrics) == 1 and len(said(log_lines)) == 3


async def test_a_store_that_refuses_info_is_said_once(
    server: RedisServer, store: RedisStore, log_lines: io.StringIO
) -> None:
    await store.client.acl_setuser(
        "gateway", enabled=True, passwords=["+pw"], commands=["+@all", "-info"], keys=["*"]
    )
    limited = RedisStore(server.url.replace("redis://", "redis://gateway:pw@"))
    metrics = Metrics()
    watcher = EvictionWatch(metrics.store_evicting)
    try:
        await watcher.look(limited)
        await watcher.look(limited)
    finally:
        await limited.close()
    lines = said(log_lines)
    assert [line["level"] for line in lines] == ["info"], lines
    assert "INFO refused" in lines[0]["msg"] and "noeviction" in lines[0]["msg"]
    assert evicting(metrics) == 0
    assert "pw" not in log_lines.getvalue()


async def test_a_database_the_server_does_not_have_is_a_store_failure_not_a_refusal(
    server: RedisServer, log_lines: io.StringIO
) -> None:
    """``redis://…/99`` on a server of 16 databases: every command fails. Its INFO's error was
    taken for an ACL's refusal ("the store does not say how it evicts"), and the call for an
    answer ("store available again")."""
    beyond = RedisStore(server.url.rsplit("/", 1)[0] + "/99")
    watcher = EvictionWatch(Metrics().store_evicting)
    try:
        with pytest.raises(StoreUnavailable):
            await beyond.memory_policies()
        await watcher.look(beyond)  # does not raise, and finds nothing
    finally:
        await beyond.close()
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert not said(log_lines), said(log_lines)
    assert not [line for line in lines if "available again" in line["msg"]], lines
    [failed] = [line for line in lines if line["msg"].startswith("store unavailable")]
    assert "DB index is out of range" in failed["error"]


async def test_a_store_that_does_not_answer_is_not_a_finding(
    server: RedisServer, store: RedisStore, log_lines: io.StringIO
) -> None:
    await policy(store, "64mb", "allkeys-random")
    metrics = Metrics()
    watcher = EvictionWatch(metrics.store_evicting)
    await watcher.look(store)
    server.stop()
    await watcher.look(store)  # does not raise; what was found stands
    assert evicting(metrics) == 1 and len(said(log_lines)) == 1


async def test_memory_store_never_evicts(log_lines: io.StringIO) -> None:
    metrics = Metrics()
    await EvictionWatch(metrics.store_evicting).look(MemoryStore())
    assert evicting(metrics) == 0 and said(log_lines) == []


async def test_the_gateway_says_it_as_it_starts(
    server: RedisServer,
    store: RedisStore,
    make_gateway: GatewayFactory,
    log_lines: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    aiohttp_client: Any,
) -> None:
    monkeypatch.setattr(watch, "INTERVAL", 0.05)
    await policy(store, "100mb", "volatile-lru")
    gw = await make_gateway(store=RedisStore(server.url))
    await asyncio.sleep(0.3)  # the first look is at once, in the background
    admin = await aiohttp_client(create_admin_app(gw.current))
    async with admin.get("/metrics") as r:
        exposed = await r.text()
    lines = said(log_lines)
    assert [line["policy"] for line in lines] == ["volatile-lru (maxmemory 104857600 bytes)"]
    assert "gateway_store_evicting 1.0" in exposed.splitlines()


async def test_a_cluster_names_the_master_that_evicts(
    cluster_topology: ClusterTopology, log_lines: io.StringIO
) -> None:
    store = topology_store(cluster_topology)
    metrics = Metrics()
    try:
        masters = await store.memory_policies()
        assert masters is not None and len(masters) == 3
        target = masters[1].node
        host, port = target.rsplit(":", 1)
        # The one master's own config, as an operator would set it on that node.
        node = redis.Redis(host=host, port=int(port))
        await node.config_set("maxmemory", "32mb")
        await node.config_set("maxmemory-policy", "allkeys-lfu")
        try:
            await EvictionWatch(metrics.store_evicting).look(store)
        finally:
            await node.config_set("maxmemory", "0")
            await node.config_set("maxmemory-policy", "noeviction")
            await node.aclose()
    finally:
        await store.close()
    assert evicting(metrics) == 1
    assert [line["policy"] for line in said(log_lines)] == [
        describe([MemoryPolicy(target, 32 * 1024 * 1024, "allkeys-lfu")])
    ]
