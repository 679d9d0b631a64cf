"""The store contract runs on every store: memory, a standalone Redis, and Redis behind
Sentinel and as a Cluster (each topology started once for the session, on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.config.store import StoreSettings
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore, open_redis_store
from tests.support import ClusterTopology, SentinelTopology


@pytest.fixture(scope="session")
def sentinel_topology() -> Iterator[SentinelTopology]:
    topology = SentinelTopology()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def cluster_topology() -> Iterator[ClusterTopology]:
    topology = ClusterTopology()
    yield topology
    topology.stop()


def topology_store(topology: SentinelTopology | ClusterTopology, **extra: Any) -> RedisStore:
    """A store on ``topology`` from its config section alone, with a prefix of its own unless
    ``prefix`` is given."""
    section = topology.store_section(**{"prefix": f"t{uuid.uuid4().hex[:8]}:", **extra})
    return open_redis_store(StoreSettings.model_validate(section))


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The same test, once per store and Redis topology."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "redis":
        redis_store = RedisStore(
            request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:8]}:"
        )
    else:
        redis_store = topology_store(request.getfixturevalue(f"{request.param}_topology"))
    yield redis_store
    await redis_store.close()
