"""A store that lost its data is said (an ERROR line, ``gateway_store_alarms_total``) and claimed
again at once, so that a CLI run holding another master key cannot claim it; a store claimed by
another master key is said once. Through the real gateway on a real ``redis-server`` restarted
empty, and look by look on both stores."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import ApiKeySettings
from gateway.errors import ServiceUnavailable
from gateway.keys import watch
from gateway.keys.fingerprint import ensure_master_key
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.keys.watch import StoreWatch
from gateway.observe.metrics import Metrics
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support import FakeClock, RedisServer, free_port

SCORES = "/v1/users/usr_a/scores"


def alarms(metrics: Metrics, alarm: str) -> float:
    value = metrics.registry.get_sample_value("gateway_store_alarms_total", {"alarm": alarm})
    return value or 0.0


def mismatched(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_store_master_key_mismatch")


def errors(log_lines: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    return [line for line in lines if line.get("level") == "error"]


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test restarts empty (no persistence)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "INTERVAL", 0.05)


async def settle() -> None:
    """Long enough for a few looks of the watch (every 0.05 s here)."""
    await asyncio.sleep(0.3)


@pytest.mark.usefixtures("quick")
async def test_a_redis_restarted_empty_is_said_once_and_claimed_again(
    make_gateway: GatewayFactory, redis: RedisServer, log_lines: io.StringIO
) -> None:
    store = RedisStore(redis.url)
    gw = await make_gateway(store=store)
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    async with gw.client.get(SCORES, headers=auth) as r:
        assert r.status == 200
    await settle()
    assert errors(log_lines) == []  # a store that holds its data: nothing to say

    redis.stop()
    redis.start()  # the same address, nothing in it
    gw.clock.advance(2)  # past api_keys.cache_ttl: the key is looked up again
    await settle()

    # Fail closed, as before the watch: the key is unknown now.
    async with gw.client.get(SCORES, headers=auth) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_token"
    # Said once, with what was lost and what to do, and counted once.
    await settle()
    said = errors(log_lines)
    assert [line["alarm"] for line in said] == ["data_lost"], said
    assert "lost its data" in said[0]["msg"] and "created again" in said[0]["msg"]
    assert alarms(gw.runtime.metrics, "data_lost") == 1
    assert key not in log_lines.getvalue() and key[8:] not in log_lines.getvalue()

    # Claimed again by this gateway's master key: a CLI run holding another one is refused
    # instead of sealing keys that no replica could open.
    assert await store.master_fingerprint() == gw.runtime.keys.sealer.fingerprint
    cli_store = RedisStore(redis.url)
    other = KeyService(cli_store, Sealer(os.urandom(32)), FakeClock(), ApiKeySettings())
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await other.create("acc_1", "live")
    finally:
        await cli_store.close()
    assert caught.value.details["reason"] == "master_key_mismatch"

    # A key created again works, and the watch is quiet again.
    fresh = await gw.key()
    async with gw.client.get(SCORES, headers={"Authorization": f"Bearer {fresh}"}) as r:
        assert r.status == 200
    await settle()
    assert [line["alarm"] for line in errors(log_lines) if "alarm" in line] == ["data_lost"]


async def test_a_first_look_at_an_empty_store_claims_it_without_an_alarm(store: Store) -> None:
    metrics, sealer = Metrics(), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    await watcher.look(store, sealer)  # a new store, or one the start could not reach
    assert await store.master_fingerprint() == sealer.fingerprint
    await watcher.look(store, sealer)
    assert alarms(metrics, "data_lost") == alarms(metrics, "master_key_mismatch") == 0
    assert mismatched(metrics) == 0


async def test_another_master_key_claiming_a_lost_store_is_said_once(
    store: Store, log_lines: io.StringIO
) -> None:
    metrics, ours, theirs = Metrics(), Sealer(os.urandom(32)), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    await ensure_master_key(store, theirs)  # the store was lost, and a CLI run claimed it first
    for _ in range(3):
        await watcher.look(store, ours)
    said = errors(log_lines)
    assert [line["alarm"] for line in said] == ["master_key_mismatch"]
    assert ours.fingerprint in said[0]["error"] and theirs.fingerprint in said[0]["error"]
    assert alarms(metrics, "master_key_mismatch") == 1
    assert alarms(metrics, "data_lost") == 0
    assert await store.master_fingerprint() == theirs.fingerprint  # the watch overwrites nothing
    assert mismatched(metrics) == 1  # while it lasts, for an alert that lasts as long


async def test_a_store_lost_and_claimed_by_another_key_between_two_looks_is_both(
    store: Store, log_lines: io.StringIO
) -> None:
    """An operator try-out: a CLI run with another master key won the few seconds after a
    loss; the gateway said only "claimed by another master key", never that data was lost."""
    metrics, ours, theirs = Metrics(), Sealer(os.urandom(32)), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    await watcher.look(store, ours)  # seen
    if isinstance(store, MemoryStore):
        store._fingerprint = None  # the loss, as a restart would make it
    else:
        assert isinstance(store, RedisStore)
        await store._redis.delete(f"{store._keys}master_key_fingerprint")
    await ensure_master_key(store, theirs)
    await watcher.look(store, ours)
    await watcher.look(store, ours)
    said = [line["alarm"] for line in errors(log_lines)]
    assert said == ["data_lost", "master_key_mismatch"]
    assert alarms(metrics, "data_lost") == alarms(metrics, "master_key_mismatch") == 1
    assert mismatched(metrics) == 1
    assert "nothing was written" not in log_lines.getvalue()  # the CLI's advice, not here


async def test_a_process_that_created_keys_creates_none_once_another_key_claimed_the_store(
    store: Store,
) -> None:
    """A review: the service confirmed its master key once and then sealed keys whatever the
    store said, so the mismatch line's "creates no key" was false."""
    ours, theirs = Sealer(os.urandom(32)), Sealer(os.urandom(32))
    service = KeyService(store, ours, FakeClock(), ApiKeySettings())
    await service.create("acc_1", "live")  # confirmed
    await lose_everything(store)
    await ensure_master_key(store, theirs)  # a CLI run with another key, first after the loss
    with pytest.raises(ServiceUnavailable) as caught:
        await service.create("acc_1", "live")
    assert caught.value.details["reason"] == "master_key_mismatch"
    assert await store.list_keys() == []


async def lose_everything(store: Store) -> None:
    """What a restart without persistence does to the store's data."""
    if isinstance(store, MemoryStore):
        MemoryStore.__init__(store)
        return
    assert isinstance(store, RedisStore)
    async for name in store._redis.scan_iter(match=f"{store._p}*"):
        await store._redis.delete(name)


async def test_a_fingerprint_is_compared_whole(store: Store, log_lines: io.StringIO) -> None:
    """One that merely holds this process's (a store written by hand, or by a bug) is another."""
    metrics, ours = Metrics(), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    await store.claim_master_fingerprint(ours.fingerprint + "0")
    await watcher.look(store, ours)
    assert [line["alarm"] for line in errors(log_lines)] == ["master_key_mismatch"]
    assert mismatched(metrics) == 1


async def test_a_reload_to_another_store_starts_over() -> None:
    metrics, sealer = Metrics(), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    first, second = MemoryStore(), MemoryStore()
    await watcher.look(first, sealer)
    await watcher.look(second, sealer)  # a new, empty store: not a loss
    assert alarms(metrics, "data_lost") == 0
    assert await second.master_fingerprint() == sealer.fingerprint


async def test_a_store_that_does_not_answer_is_no_alarm(log_lines: io.StringIO) -> None:
    metrics, sealer = Metrics(), Sealer(os.urandom(32))
    watcher = StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        await watcher.look(dead, sealer)  # no exception: the store's own warning says it
    finally:
        await dead.close()
    assert alarms(metrics, "data_lost") == alarms(metrics, "master_key_mismatch") == 0
    assert errors(log_lines) == []
