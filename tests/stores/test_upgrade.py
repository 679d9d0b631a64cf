"""A store written by a gateway before the hash-tagged key schema keeps its API keys, master-key
fingerprint and relationships: the first process of this version moves them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from gateway.keys.fingerprint import ensure_master_key
from gateway.keys.sealing import Sealer
from gateway.stores.redis import RedisStore
from tests.stores.conftest import topology_store

RECORD = orjson.dumps({"key_id": "key_old", "account": "acc_1", "digest": "d" * 64})


@pytest.fixture(params=["redis", "sentinel"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    prefix = f"up{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        opened = RedisStore(request.getfixturevalue("redis_url"), prefix=prefix)
    else:
        opened = topology_store(request.getfixturevalue("sentinel_topology"), prefix=prefix)
    yield opened
    await opened.close()


async def write_as_before(client: Any, p: str, fingerprint: str) -> None:
    """What the previous version wrote, name for name."""
    await client.set(f"{p}key:key_old", RECORD)
    await client.set(f"{p}keydigest:{'d' * 64}", "key_old")
    await client.sadd(f"{p}keys", "key_old")
    await client.set(f"{p}master_key_fingerprint", fingerprint)
    await client.set(f"{p}rel:acc_1\x1fmem_1\x1fmem_2", b"1")
    await client.sadd(f"{p}rels:acc_1", "mem_1\x1fmem_2")


async def test_the_first_process_moves_what_an_earlier_version_wrote(store: RedisStore) -> None:
    client: redis.Redis = store.client  # type: ignore[assignment]
    p = store._p
    sealer = Sealer(b"k" * 32)
    await write_as_before(client, p, sealer.fingerprint)
    assert await store.key_by_digest("d" * 64) is None  # not found under today's names

    await ensure_master_key(store, sealer)  # what serve and every CLI run do first

    assert await store.key_by_digest("d" * 64) == RECORD
    assert await store.key_by_id("key_old") == RECORD
    assert await store.list_keys("acc_1") == [RECORD]
    assert await store.master_fingerprint() == sealer.fingerprint
    assert await store.relationship_active("acc_1", "mem_1", "mem_2")
    assert await store.list_relationships("acc_1") == [("mem_1", "mem_2")]
    left = [name async for name in client.scan_iter(match=f"{p}*")]
    assert not [n for n in left if b"{" not in n], "an old name was left behind"
    assert await store.upgrade_schema() == 0  # nothing left to move


async def test_another_master_key_is_still_refused_after_the_move(store: RedisStore) -> None:
    from gateway.keys.fingerprint import MasterKeyMismatch

    client: redis.Redis = store.client  # type: ignore[assignment]
    await write_as_before(client, store._p, Sealer(b"k" * 32).fingerprint)
    with pytest.raises(MasterKeyMismatch):
        await ensure_master_key(store, Sealer(b"x" * 32))
