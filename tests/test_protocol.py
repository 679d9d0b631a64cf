"""The public listener's protocol handler (:mod:`gateway.protocol`): its shutdown bound."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web

from gateway.protocol import GatewayRunner
from tests.support import free_port


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
