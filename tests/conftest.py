"""Shared fixtures. Everything is real: a fresh redis-server on a free port for the session,
real aiohttp upstreams and the real gateway app on localhost sockets."""

from __future__ import annotations

import io
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Listener, Node, Settings
from gateway.decision_server import DecisionServer
from gateway.observe.logs import JsonFormatter
from gateway.runtime import Current, Runtime, build_runtime
from gateway.settings import parse_settings
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.support import (
    FakeClock,
    GatewayProcess,
    Recorder,
    RedisServer,
    ThreadedUpstream,
    base_url,
    signing_config,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    if shutil.which("redis-server") is None:
        pytest.exit(
            "redis-server not found: install it first (Debian/Ubuntu: "
            "apt-get install redis-server; macOS: brew install redis)",
            returncode=4,
        )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:
        redis_server.start()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The same test, once per store implementation."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield redis_store
    await redis_store.close()


@pytest.fixture(scope="module")
def upstream_thread() -> Iterator[ThreadedUpstream]:
    """A recording upstream on its own loop, shared by a module's gateway processes."""
    upstream = ThreadedUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    """Gateway processes a test starts (it appends each one): all stopped when it ends, also
    when it fails."""
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the gateway's loggers write during the test, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[Recorder, TestServer]:
    recorder = Recorder()
    server = await aiohttp_server(recorder.app())
    return recorder, server


def make_settings(live_url: str, sandbox_url: str | None = None, **extra: Any) -> Settings:
    document: dict[str, Any] = {"upstreams": {"live": {"url": live_url}}}
    if sandbox_url is not None:
        document["upstreams"]["sandbox"] = {"url": sandbox_url}
    document["tokens"] = signing_config()
    for key, value in extra.items():
        document[key] = value
    return parse_settings(Node(document), base_dir=Path.cwd())


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    current: Current
    recorder: Recorder
    clock: FakeClock

    @property
    def runtime(self) -> Runtime:
        """The runtime the gateway serves with now (a reload replaces it)."""
        return self.current.runtime

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    async def key(self, account: str = "acc_1", environment: str = "live", **kw: Any) -> str:
        key, _ = await self.runtime.keys.create(account, environment, **kw)
        return key


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    aiohttp_client: Any, upstream: tuple[Recorder, TestServer], clock: FakeClock
) -> GatewayFactory:
    recorder, server = upstream

    async def factory(
        *, store: Store | None = None, settings: Settings | None = None, **extra: Any
    ) -> Gateway:
        url = base_url(server)
        settings = settings or make_settings(url, url, **extra)
        current = Current(build_runtime(settings, clock=clock, store=store or MemoryStore()))
        client = await aiohttp_client(create_app(current))
        return Gateway(client, current, recorder, clock)

    return factory


@dataclass
class Decider:
    """Asks for decisions on one listener: the public one, or the decision listener."""

    session: aiohttp.ClientSession
    base: str
    port: int

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.session.request(method, self.base.rstrip("/") + path, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)


@asynccontextmanager
async def decision_listener(gw: Gateway) -> AsyncIterator[Decider]:
    """The decision listener (:mod:`gateway.decision_server`) on a free port of 127.0.0.1,
    serving ``gw``'s runtime (a reload of ``gw`` applies to it too)."""
    server = DecisionServer(gw.current, gw.runtime.settings)
    await server.start(Listener(host="127.0.0.1", port=0), None, reuse_port=False)
    try:
        async with aiohttp.ClientSession() as session:
            yield Decider(session, f"http://127.0.0.1:{server.port}", server.port)
    finally:
        await server.close(timeout=5)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()
