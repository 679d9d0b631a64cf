"""The public listener's protocol handler (:mod:`gateway.protocol`): its shutdown bound."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from gateway.app import create_app
from gateway.protocol import GatewayRunner
from gateway.runtime import Current, build_runtime, close_resources
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.conftest import make_settings
from tests.support import Recorder, RedisServer, base_url, free_port, redis_asleep

SCORES = "/v1/users/usr_a/scores"


async def test_a_drain_ends_a_request_still_running_after_the_shutdown_timeout() -> None:
    """A request still in its handler when the drain's time is up is cancelled then, not after
    twice that: aiohttp cancels only the request's body at first, so a handler waiting on
    something else (its upstream) ran on for another full timeout. The contract: in-flight
    requests get ``SHUTDOWN_TIMEOUT`` (30 s), which the Kubernetes grace period is sized for."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits_on_its_upstream(request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", waits_on_its_upstream)
    timeout = 2.0
    runner = GatewayRunner(app, shutdown_timeout=timeout, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/"))
        await asyncio.wait_for(started.wait(), 5)
        begun = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - begun
        assert cancelled.is_set()
        # aiohttp alone: 2 x timeout (4 s). With the bound: the timeout and a moment.
        assert took < timeout + 1.5, took
        # The connection was closed under the request: that is what the client sees.
        with contextlib.suppress(aiohttp.ClientError):
            await request


async def listening(current: Current, shutdown_timeout: float) -> tuple[GatewayRunner, int]:
    """The gateway's app served as ``gateway serve`` serves it (:class:`GatewayRunner`, whose
    ``cleanup`` drains for ``shutdown_timeout`` and then cuts off what is left), and its port."""
    runner = GatewayRunner(
        create_app(current),
        shutdown_timeout=shutdown_timeout,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_a_request_cut_off_at_shutdown_is_logged_as_such(
    upstream: tuple[Recorder, TestServer], log_lines: io.StringIO
) -> None:
    """The gateway's own listener, cut off by the drain while its request waits on the
    upstream: the access line says so (status 499, error ``shutdown``), as nginx logs a
    request that ended without an answer, and the metrics count no 500 for it."""
    recorder, server = upstream
    current = Current(build_runtime(make_settings(base_url(server)), store=MemoryStore()))
    key, _ = await current.runtime.keys.create("acc_1", "live")
    runner, port = await listening(current, shutdown_timeout=1.0)
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.get(
                    f"http://127.0.0.1:{port}/v1/users/usr_a/scores?slow=30",
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            while not recorder.seen:  # the request is at the upstream, waiting on it
                await asyncio.sleep(0.01)
            await runner.cleanup()
            with contextlib.suppress(aiohttp.ClientError):
                await request
    finally:
        await close_resources(current)
    (line,) = [
        orjson.loads(text)
        for text in log_lines.getvalue().splitlines()
        if '"gateway.access"' in text
    ]
    assert (line["status"], line["error"]) == (499, "shutdown"), line
    assert line["account"] == "acc_1"  # who it was, as for any request
    exported = generate_latest(current.runtime.metrics.registry).decode()
    assert 'status="499"' in exported and 'status="500"' not in exported


async def test_a_request_cut_off_before_its_decision_counts_no_decision(
    upstream: tuple[Recorder, TestServer],
    redis_server: RedisServer,
    redis_url: str,
    log_lines: io.StringIO,
) -> None:
    """Authenticated, then cut off at shutdown while its rate limit waits on a stalled store:
    no decision was made, so none is counted (no ``gateway_auth_decisions_total`` sample) and
    its audit line's outcome is ``error``, not ``deny``."""
    _, server = upstream
    store = RedisStore(redis_url, prefix=f"cut-{free_port()}:", timeout=5.0)
    limits = {"rules": [{"group": "default", "per": "credential", "limit": 100, "period": "10s"}]}
    current = Current(
        build_runtime(make_settings(base_url(server), rate_limits=limits), store=store)
    )
    key, _ = await current.runtime.keys.create("acc_1", "live")
    runner, port = await listening(current, shutdown_timeout=0.5)
    url, headers = f"http://127.0.0.1:{port}{SCORES}", {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers) as first:
                assert first.status == 200  # the key is now cached: authenticated in memory
            async with redis_asleep(redis_server.port, 2.0):
                request = asyncio.create_task(session.get(url, headers=headers))
                await asyncio.sleep(0.2)  # authenticated, waiting on the rate limit's store
                await runner.cleanup()
                with contextlib.suppress(aiohttp.ClientError):
                    await request
    finally:
        await close_resources(current)
    lines = [orjson.loads(text) for text in log_lines.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert [(line["status"], line["error"]) for line in access] == [
        (200, None),
        (499, "shutdown"),
    ]
    audit = [line["outcome"] for line in lines if line["logger"] == "gateway.audit"]
    assert audit == ["allow", "error"], audit
    current.runtime.metrics.flush()
    decisions = [
        (s.labels["outcome"], s.labels["reason"], s.value)
        for family in current.runtime.metrics.registry.collect()
        if family.name == "gateway_auth_decisions"
        for s in family.samples
        if s.name == "gateway_auth_decisions_total"
    ]
    assert decisions == [("allow", "ok", 1.0)], decisions
